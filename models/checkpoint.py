"""Checkpoints as ``ckpt-<step>.npz``: every variable plus the model's identity.

A checkpoint stores the model name and network sizes; restoring it into a
different model or size raises CheckpointMismatch naming both values. Files
are written under a temporary name and renamed, so a kill never leaves a
half-written checkpoint under a real name.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from models.gan import GAN

_NAME = re.compile(r"^ckpt-(\d+)\.npz$")


class CheckpointMismatch(ValueError):
    """A checkpoint made with another model or other network sizes."""


class CheckpointNotFound(FileNotFoundError):
    """No checkpoint where one is required."""


def _groups(gan: GAN) -> dict:
    return {
        "G": gan.generator.weights,
        "D": gan.discriminator.weights,
        "G_opt": gan.g_optimizer.variables,
        "D_opt": gan.d_optimizer.variables,
    }


def identity(gan: GAN) -> dict:
    return {"model": gan.spec.name, **gan.sizes.as_dict()}


def save(gan: GAN, folder: str | Path, step: int, keep: int = 3) -> Path:
    """Write ``ckpt-<step>.npz`` and keep only the newest ``keep`` (0 keeps all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"__meta__": np.array(json.dumps({**identity(gan), "step": int(step)}))}
    for group, variables in _groups(gan).items():
        for index, var in enumerate(variables):
            arrays[f"{group}/{index:04d}"] = np.asarray(var.numpy())
    arrays["rng/state"] = gan.rng.state.numpy()
    path = folder / f"ckpt-{step:08d}.npz"
    tmp = folder / f".ckpt-{step:08d}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(folder)[:-keep]:
            old.unlink()
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


class CheckpointCorrupt(ValueError):
    """A checkpoint file that cannot be read (for example cut short by a full disk)."""


def read_meta(path: str | Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["__meta__"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        older = [p.name for p in list_checkpoints(Path(path).parent) if p != Path(path)]
        hint = (f"Move it aside to resume from the next newest one ({older[-1]})" if older
                else "Move it aside and train again")
        raise CheckpointCorrupt(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}). "
                                f"{hint}.") from exc


def check_identity(meta: dict, gan: GAN, path: Path) -> None:
    wanted = identity(gan)
    differing = [f"{key}: checkpoint {meta.get(key)!r}, requested {value!r}"
                 for key, value in wanted.items() if meta.get(key) != value]
    if differing:
        raise CheckpointMismatch(
            f"checkpoint {path} was made with other settings ({'; '.join(differing)}). "
            "Use the settings it was trained with, or another checkpoint folder.")


def restore(gan: GAN, path: str | Path, optimizers: bool = True) -> int:
    """Load ``path`` into ``gan`` after checking its identity; return its step."""
    path = Path(path)
    meta = read_meta(path)
    check_identity(meta, gan, path)
    with np.load(path, allow_pickle=False) as data:
        for group, variables in _groups(gan).items():
            if group.endswith("_opt") and not optimizers:
                continue
            for index, var in enumerate(variables):
                key = f"{group}/{index:04d}"
                if key not in data or data[key].shape != tuple(var.shape):
                    raise CheckpointMismatch(
                        f"checkpoint {path}: variable {key} ({var.path}) is missing or has "
                        f"another shape; it was not written by this version of the {gan.spec.name} model")
                var.assign(data[key])
        if optimizers and "rng/state" in data:
            gan.rng.reset(data["rng/state"])
    return int(meta["step"])


def load_for_inference(folder: str | Path, gan_factory) -> tuple[GAN, dict]:
    """Restore the newest checkpoint of ``folder`` into ``gan_factory(meta)``.

    Returns the GAN and the checkpoint's metadata plus ``path``, the file
    restored. Raises CheckpointNotFound naming the folder and the command
    that creates it.
    """
    path = latest(folder)
    if path is None:
        model = Path(folder).name
        raise CheckpointNotFound(
            f"no checkpoint found in {folder}. Train the model first, e.g. "
            f"'python train.py --model {model} --root {Path(folder).parent.parent}'.")
    meta = read_meta(path)
    gan = gan_factory(meta)
    restore(gan, path, optimizers=False)
    return gan, {**meta, "path": str(path)}
