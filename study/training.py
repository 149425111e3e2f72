"""The training loop: resume, checkpoints, sample grids, loss logs, divergence stop."""

from __future__ import annotations

import csv
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study.errors import StageError
from study.images import to_uint8
from study.plots import save_grid
from study.provenance import read_json, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("step", "d_loss", "g_loss", "penalty", "wasserstein",
                "grad_norm_real", "grad_norm_fake", "grad_norm_interpolated", "sample_std",
                "seconds")
# The columns before sample_std was logged. A run that started with them
# resumes writing them.
OLDER_LOSS_COLUMNS = tuple(c for c in LOSS_COLUMNS if c != "sample_std")


class TrainingDiverged(StageError):
    """A loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    model: str
    tfrecords: str
    checkpoint_dir: str
    batch_size: int = 128
    epochs: int = 20
    max_steps: int = 0
    z_dim: int = 100
    gf_dim: int = 64
    df_dim: int = 64
    ckpt_step: int = 500
    log_every: int = 10
    sample_count: int = 64
    keep_checkpoints: int = 3
    seed: int = 0
    renew: bool = False
    progress: bool = True
    # 0 or 1: TensorFlow's default device; 2 or more: data-parallel on that many GPUs.
    gpus: int = 0

    def __post_init__(self):
        for key in ("batch_size", "ckpt_step", "log_every", "sample_count", "z_dim", "gf_dim", "df_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"--{key} must be at least 1, got {getattr(self, key)}")
        if self.max_steps < 0 or self.epochs < 0 or (self.max_steps == 0 and self.epochs == 0):
            raise ValueError("set --epochs or --max_steps to a positive number")
        if self.gpus < 0:
            raise ValueError(f"--gpus must be 0 or more, got {self.gpus}")
        if self.gpus > 1 and self.batch_size % self.gpus:
            raise ValueError(f"--batch_size {self.batch_size} does not split evenly across "
                             f"--gpus {self.gpus}; use a multiple of {self.gpus}")


def total_steps(config: TrainConfig, n_images: int, n_critic: int) -> int:
    """Generator steps to run: ``max_steps`` if set, else ``epochs`` passes over the data.

    An epoch is ``n_images // batch_size`` discriminator batches, so a model
    with 5 critic steps runs a fifth as many generator steps per epoch.
    """
    if config.max_steps > 0:
        return config.max_steps
    return max(1, config.epochs * (n_images // config.batch_size) // n_critic)


# Settings a resumed run must share with the run it continues; the length
# (--epochs, --max_steps) may grow.
_IDENTITY_KEYS = ("model", "z_dim", "gf_dim", "df_dim", "batch_size", "seed")


def sample_spread(images: np.ndarray) -> float:
    """Return the standard deviation across samples ``[N, H, W, C]`` of each pixel, averaged.

    It is near 0 when the generator maps every z to the same image (mode
    collapse). A batch of real 64x64 CelebA faces in [-1, 1] gives about 0.45.
    """
    return float(np.mean(np.std(images, axis=0)))


# A grid whose spread across z is below this fraction of a real batch's
# spread is reported as a likely mode collapse.
COLLAPSE_FRACTION = 0.25


def _warn_if_collapsed(model: str, step: int, spread: float, real_spread: float) -> None:
    if spread < COLLAPSE_FRACTION * real_spread:
        log.warning("%s, step %d: the sample grid hardly changes with z (sample_std %.3f, a real "
                    "batch %.3f), so the generator draws nearly one image for every z (mode "
                    "collapse). Check the sample grids, and train longer if they stay alike.",
                    model, step, spread, real_spread)


def _logged_step(line: str, columns: tuple[str, ...]) -> int | None:
    fields = line.split(",")
    if len(fields) != len(columns):
        return None
    try:
        return int(fields[0])
    except ValueError:
        return None


def prepare_loss_log(path: Path, start: int) -> tuple[bool, tuple[str, ...]]:
    """Prepare ``losses.csv`` for rows after step ``start``.

    Returns ``(needs_header, columns)``: whether the header must be written
    first, and the columns of the rows to append.

    A run that was killed (preempted, cancelled, out of time) may have logged
    rows after its last checkpoint, or half a row. Training resumes from that
    checkpoint and logs those steps again, so such rows are removed and every
    step appears once. A missing or empty file, or one with only part of the
    header, needs the header. A file with the older header (no sample_std)
    keeps its columns while it keeps a row. A file that starts with another
    header is left as it is.
    """
    headers = {",".join(LOSS_COLUMNS): LOSS_COLUMNS,
               ",".join(OLDER_LOSS_COLUMNS): OLDER_LOSS_COLUMNS}
    if not path.exists():
        return True, LOSS_COLUMNS
    text = path.read_text()
    if "\n" not in text and any(header.startswith(text.strip()) for header in headers):
        path.write_text("")
        return True, LOSS_COLUMNS
    lines = text.splitlines()
    columns = headers.get(lines[0])
    if columns is None:
        return False, LOSS_COLUMNS
    rows = lines[1:]
    if not text.endswith("\n"):
        rows = rows[:-1]  # cut off in the middle of a row
    kept = [line for line in rows
            if (step := _logged_step(line, columns)) is not None and step <= start]
    if not kept and columns != LOSS_COLUMNS:
        # Nothing of the older run remains, so the new columns can start here.
        path.write_text("")
        return True, LOSS_COLUMNS
    if len(kept) < len(lines) - 1:
        log.info("%s: removing %d row(s) logged after step %d by the run that stopped there",
                 path, len(lines) - 1 - len(kept), start)
        # csv.writer ends rows with \r\n; the rewritten rows keep that.
        write_text_atomic(path, "".join(f"{line}\r\n" for line in [lines[0], *kept]))
    return False, columns


def make_strategy(gpus: int):
    """Return a MirroredStrategy over the first ``gpus`` GPUs, or None for 0 or 1.

    Raises ValueError naming the visible GPUs when fewer than ``gpus`` exist.
    """
    if gpus < 2:
        return None
    import tensorflow as tf

    visible = [device.name for device in tf.config.list_logical_devices("GPU")]
    if len(visible) < gpus:
        raise ValueError(f"--gpus {gpus} requested, but TensorFlow sees {len(visible)} GPU(s)"
                         f"{': ' + ', '.join(visible) if visible else ''}. Request that many GPUs "
                         "from the scheduler (SLURM: --gres=gpu:N) or lower --gpus.")
    return tf.distribute.MirroredStrategy(visible[:gpus])


def _check_folder(config: TrainConfig, folder: Path, data_sha256: str) -> None:
    """Raise ValueError when ``folder`` contains a run that ``config`` cannot continue."""
    config_path = folder / "config.json"
    if config.renew or not config_path.exists():
        return
    old = read_json(config_path)
    differing = [f"{key}: existing {old.get(key)!r}, requested {getattr(config, key)!r}"
                 for key in _IDENTITY_KEYS if old.get(key) != getattr(config, key)]
    recorded = old.get("training_data_sha256")
    if recorded is None:
        # A run started before the hash was recorded resumes with a warning, because
        # rejecting it would leave only --renew, which deletes the run.
        log.warning("%s does not record which TFRecords its run was trained on, so they cannot "
                    "be checked; resuming on the TFRecords in %s", config_path, config.tfrecords)
    elif recorded != data_sha256:
        differing.append(f"training images: the TFRecords in {config.tfrecords} were rewritten "
                         "since this run started")
    if differing:
        raise ValueError(
            f"{folder} contains a {old.get('model')} run with other settings "
            f"({'; '.join(differing)}). Pass --renew to start over there, or choose another "
            "--checkpoint_dir.")


def _prepare_folder(config: TrainConfig, folder: Path, data_sha256: str) -> None:
    _check_folder(config, folder, data_sha256)
    if config.renew and folder.exists():
        log.warning("--renew: removing earlier checkpoints, samples and logs in %s", folder)
        for path in folder.glob("ckpt-*.npz"):
            path.unlink()
        for name in ("samples", "tensorboard"):
            shutil.rmtree(folder / name, ignore_errors=True)
        for name in ("losses.csv", "sample_z.npy", "config.json"):
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def plan(config: TrainConfig) -> dict:
    """Check ``config`` against its data and checkpoint folder without writing anything.

    Returns what :func:`train` would do: the model, the training images, the
    total steps and the step it would start from. Raises the errors
    :func:`train` would raise before its first step.
    """
    from models import checkpoint, get_spec
    from study.tfrecords import check_batch_size, read_manifest

    spec = get_spec(config.model)
    if config.gpus > 1:
        from models.gan import check_distributable

        check_distributable(spec)
    manifest = read_manifest(config.tfrecords)
    check_batch_size(manifest, config.batch_size, config.tfrecords)
    folder = Path(config.checkpoint_dir)
    _check_folder(config, folder, manifest["source_sha256"])
    newest = None if config.renew else checkpoint.latest(folder)
    start = 0
    if newest is not None:
        from types import SimpleNamespace

        from models.gan import Sizes

        meta = checkpoint.read_meta(newest)
        sizes = Sizes(config.z_dim, config.gf_dim, config.df_dim, manifest["preprocessing"]["size"])
        # check_identity reads only .spec and .sizes, so no networks are built here.
        checkpoint.check_identity(meta, SimpleNamespace(spec=spec, sizes=sizes), newest)
        start = meta["step"]
    return {"model": spec.name, "label": spec.label, "n_train_images": manifest["n_images"],
            "image_size": manifest["preprocessing"]["size"],
            "steps": total_steps(config, manifest["n_images"], spec.n_critic), "start_step": start,
            "resume_from": str(newest) if newest is not None else None}


def train(config: TrainConfig) -> dict:
    """Train ``config.model`` and return a summary dict (steps, time, last checkpoint)."""
    import tensorflow as tf

    from models import checkpoint, get_spec
    from models.gan import GAN, Sizes, check_distributable
    from study.tfrecords import read_manifest, training_dataset

    spec = get_spec(config.model)
    if config.gpus > 1:
        check_distributable(spec)
    manifest = read_manifest(config.tfrecords)
    folder = Path(config.checkpoint_dir)
    _prepare_folder(config, folder, manifest["source_sha256"])
    sizes = Sizes(config.z_dim, config.gf_dim, config.df_dim, manifest["preprocessing"]["size"])
    steps = total_steps(config, manifest["n_images"], spec.n_critic)
    write_json_atomic(folder / "config.json", {
        **asdict(config), "steps": steps, "image_size": sizes.image_size,
        "spec": spec.as_dict(), "n_train_images": manifest["n_images"],
        "training_data_sha256": manifest["source_sha256"]})

    strategy = make_strategy(config.gpus)
    gan = GAN(spec, sizes, seed=config.seed, strategy=strategy)
    if strategy is not None:
        log.info("training %s data-parallel on %d GPUs: global batch %d, %d per GPU", spec.name,
                 strategy.num_replicas_in_sync, config.batch_size,
                 config.batch_size // strategy.num_replicas_in_sync)
    start = 0
    newest = checkpoint.latest(folder)
    if newest is not None:
        start = checkpoint.restore(gan, newest)
        log.info("resuming %s from %s (step %d of %d)", spec.name, newest.name, start, steps)
    z_path = folder / "sample_z.npy"
    if z_path.exists():
        sample_z = np.load(z_path, allow_pickle=False)
    else:
        sample_z = np.random.default_rng(config.seed).standard_normal(
            (config.sample_count, config.z_dim)).astype(np.float32)
        np.save(z_path, sample_z)
    if start >= steps:
        log.info("%s already trained for %d steps; nothing to do", spec.name, start)
        return {"model": spec.name, "steps": start, "checkpoint": str(newest), "trained_now": 0}

    batches = iter(training_dataset(config.tfrecords, config.batch_size,
                                    seed=config.seed + start, group=spec.n_critic))
    writer = tf.summary.create_file_writer(str(folder / "tensorboard"))
    csv_path = folder / "losses.csv"
    new_csv, columns = prepare_loss_log(csv_path, start)
    began = time.perf_counter()
    last_saved = newest
    with open(csv_path, "a", newline="") as handle, writer.as_default():
        table = csv.writer(handle)
        if new_csv:
            table.writerow(columns)
        bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {spec.name}",
                   unit="step", disable=not config.progress)
        for step_index in bar:
            real_group = next(batches)
            values = {k: float(v) for k, v in gan.train_step(real_group).items()}
            step = step_index + 1
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                handle.flush()
                where = last_saved.name if last_saved else "none (no checkpoint was written yet)"
                raise TrainingDiverged(
                    f"{spec.name}: non-finite {', '.join(bad)} at step {step} "
                    f"({', '.join(f'{k}={values[k]}' for k in bad)}); training stopped. "
                    f"The last good checkpoint is kept: {where} in {folder}. "
                    "Lower the learning rate or check the input data.")
            samples = spread = None
            if step % config.log_every == 0 or step == steps:
                norms = {k: float(v) for k, v in gan.diagnostics(real_group[0]).items()}
                samples = gan.sample(sample_z)
                spread = sample_spread(samples)
                row = {**values, **{f"grad_norm_{k}": v for k, v in norms.items()},
                       "sample_std": spread, "step": step, "seconds": time.perf_counter() - began}
                table.writerow([row[c] for c in columns])
                for key in ("d_loss", "g_loss", "penalty", "wasserstein"):
                    tf.summary.scalar(f"loss/{key}", values[key], step=step)
                for key, value in norms.items():
                    tf.summary.scalar(f"grad_norm/{key}", value, step=step)
                tf.summary.scalar("samples/std_across_z", spread, step=step)
                bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}")
            if step % config.ckpt_step == 0 or step == steps:
                # The loss rows go to disk first: a run killed after the checkpoint
                # resumes from it, and finds every row up to it.
                handle.flush()
                writer.flush()
                last_saved = checkpoint.save(gan, folder, step, keep=config.keep_checkpoints)
                if samples is None:
                    samples = gan.sample(sample_z)
                    spread = sample_spread(samples)
                save_grid(folder / "samples" / f"step_{step:08d}.png", to_uint8(samples))
                _warn_if_collapsed(spec.name, step, spread, sample_spread(real_group[0].numpy()))
    elapsed = time.perf_counter() - began
    log.info("%s: trained steps %d-%d in %.1f s; checkpoint %s", spec.name, start + 1, steps,
             elapsed, last_saved)
    return {"model": spec.name, "steps": steps, "checkpoint": str(last_saved),
            "trained_now": steps - start, "seconds": elapsed}
