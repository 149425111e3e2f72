"""Inpaint the test images with a trained GAN and write the study's folder layout.

Per test image ``<idx>`` (its position in the split's sorted test list):

    <idx>/original.jpg, masked.jpg
    <idx>/gen_images/gen_<i>.jpg          blended completion at iteration i
    <idx>/gen_images_overlay/gen_<i>.jpg  G(z) pasted into the hole, no blending
    <idx>/gz/gz_<i>.jpg                   G(z) itself
    <idx>/z.npz                           final z, final losses of every restart,
                                          the blending method of the final
                                          completion and its fill quality
    fill_quality.csv                      one row per completed image, rebuilt
                                          from the z.npz files after every run

In latent mode (``mode="latent"``) nothing is hidden and nothing is blended:
an image folder holds only ``original.jpg``, ``gz/`` and ``z.npz``, and no
``fill_quality.csv`` is written.

``z.npz`` is written last, so its presence marks a finished image; reruns
skip those images. An image that is started again (a killed run, or
``overwrite``) first loses its earlier outputs, so it never mixes two runs.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study import fill_quality
from study.blend import BLENDERS, overlay
from study.errors import StageError
from study.images import Preprocessing, UnreadableImage, load_face, save_rgb, to_uint8, to_unit_range
from study.inpaint import InpaintSettings, LatentOptimizer, optimize_batch

log = logging.getLogger(__name__)

HIDDEN_FILL = 255  # hidden pixels are white in masked.jpg
MODES = ("inpaint", "latent")
ITERATION_FOLDERS = ("gen_images", "gen_images_overlay", "gz")


@dataclass(frozen=True)
class CompletionJob:
    test_dir: str
    names: tuple
    out_dir: str
    iterations: int = 1500
    batch_size: int = 64
    save_every: int = 100
    start: int = 0
    end: int | None = None
    overwrite: bool = False
    progress: bool = True
    mode: str = "inpaint"
    blend: str = "poisson"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.blend not in BLENDERS:
            raise ValueError(f"unknown blending {self.blend!r}; valid: {', '.join(BLENDERS)}")


def select_images(job: CompletionJob, prep: Preprocessing):
    """Load test images ``start..end`` that still need work; return ``(indices, faces)``.

    Unreadable files are named in a warning and skipped.
    """
    end = len(job.names) if job.end is None else min(job.end, len(job.names))
    if job.start < 0 or job.start > end:
        raise ValueError(f"invalid image range --start {job.start} --end {job.end} "
                         f"for {len(job.names)} test images")
    indices, faces, unreadable = [], [], []
    for idx in range(job.start, end):
        if not job.overwrite and (Path(job.out_dir) / str(idx) / "z.npz").exists():
            continue
        try:
            faces.append(load_face(Path(job.test_dir) / job.names[idx], prep))
            indices.append(idx)
        except UnreadableImage as exc:
            unreadable.append(f"{job.names[idx]} ({exc})")
        except FileNotFoundError:
            unreadable.append(f"{job.names[idx]} (missing)")
    if unreadable:
        log.warning("skipped %d unreadable test image(s): %s", len(unreadable), "; ".join(unreadable))
    return indices, faces


def complete_images(gan, known: np.ndarray, weights: np.ndarray, settings: InpaintSettings,
                    job: CompletionJob, prep: Preprocessing) -> dict:
    """Inpaint every selected test image; return counts and the blending methods used.

    ``methods`` counts the blending method of each newly completed image's
    final completion. In inpaint mode ``fill_quality.csv`` is rebuilt even
    when no image was left to complete.
    """
    out_dir = Path(job.out_dir)
    indices, faces = select_images(job, prep)
    skipped = (min(job.end or len(job.names), len(job.names)) - job.start) - len(indices)
    methods: dict[str, int] = {}
    broken: list[int] = []
    if indices:
        broken = _complete_selected(gan, known, weights, settings, job, indices, faces, methods)
    else:
        log.info("all %d images in range already completed in %s", skipped, out_dir)
    if job.mode == "inpaint" and out_dir.is_dir():
        fill_quality.rebuild_csv(out_dir, known)
    if broken:
        raise StageError(
            f"inpainting loss became non-finite for test image(s) {broken} in {out_dir}, so their "
            f"completions were removed; the other {len(indices) - len(broken)} image(s) were saved. "
            "The same settings give the same result again. Check that the checkpoint's sample "
            "grids show faces, or lower --lr or --lam and pass --overwrite (or another --out).")
    return {"completed": len(indices), "skipped": skipped, "methods": methods}


def _complete_selected(gan, known, weights, settings, job, indices, faces, methods) -> list[int]:
    """Inpaint ``indices`` batch by batch; return the images whose final loss was not finite."""
    out_dir = Path(job.out_dir)
    broken: list[int] = []
    optimizer = LatentOptimizer(gan, weights, settings)
    bar = tqdm(total=len(indices), desc=job.mode, unit="img", disable=not job.progress)
    for begin in range(0, len(indices), job.batch_size):
        batch_idx = indices[begin:begin + job.batch_size]
        originals = np.stack(faces[begin:begin + job.batch_size])
        images = to_unit_range(originals)
        for idx, original in zip(batch_idx, originals):
            _start_image(out_dir / str(idx), original, known, job.mode)

        writer = IterationWriter(gan, out_dir, batch_idx, originals, known, job.mode, job.iterations,
                                 blend=job.blend)
        z_best, final_losses, best = optimize_batch(optimizer, images, batch_idx, job.iterations,
                                                    job.save_every, writer)
        total, contextual, perceptual = optimizer.evaluate(z_best, images)
        for row, idx in enumerate(batch_idx):
            if not np.isfinite(total[row]):
                # Without its iteration images and z.npz the image counts as not
                # done: the image database skips it and a rerun redoes it.
                for name in ITERATION_FOLDERS:
                    shutil.rmtree(out_dir / str(idx) / name, ignore_errors=True)
                broken.append(idx)
                continue
            record = writer.final[row]
            methods[record["blend_method"]] = methods.get(record["blend_method"], 0) + 1
            _save_latent(out_dir / str(idx) / "z.npz", {
                "z": np.asarray(z_best[row], np.float32),
                "restart_losses": np.asarray(final_losses[row], np.float32),
                "best_restart": np.int64(best[row]), "loss": np.float32(total[row]),
                "contextual_loss": np.float32(contextual[row]),
                "perceptual_loss": np.float32(perceptual[row]),
                "iterations": np.int64(job.iterations), "mode": np.str_(job.mode),
                **{key: (np.str_(value) if isinstance(value, str) else np.float64(value))
                   for key, value in record.items()},
            })
        bar.update(len(batch_idx))
    bar.close()
    return broken


def _start_image(folder: Path, original: np.ndarray, known: np.ndarray, mode: str) -> None:
    """Clear what an earlier run left in ``folder`` and write the original (and masked) image."""
    (folder / "z.npz").unlink(missing_ok=True)
    for name in ITERATION_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    if folder.is_dir():
        # Temporary files of atomic writes that a killed run never renamed.
        for stale in folder.glob(".*.tmp*"):
            stale.unlink(missing_ok=True)
    save_rgb(folder / "original.jpg", original)
    if mode == "inpaint":
        masked = np.where(known[:, :, None] > 0.5, original, HIDDEN_FILL).astype(np.uint8)
        save_rgb(folder / "masked.jpg", masked)
    else:
        (folder / "masked.jpg").unlink(missing_ok=True)


class IterationWriter:
    """``on_checkpoint`` callback of :func:`optimize_batch`: saves one batch's outputs.

    After the final iteration, ``final[row]`` contains that image's blending
    method and, in inpaint mode, the fill quality of its final completion,
    measured on the images before JPEG compression.
    """

    def __init__(self, gan, out_dir: Path, indices, originals: np.ndarray, known: np.ndarray,
                 mode: str, final_iteration: int, blend: str = "poisson"):
        self.gan = gan
        self.blend = BLENDERS[blend]
        self.out_dir = out_dir
        self.indices = indices
        self.originals = originals
        self.known = known
        self.mode = mode
        self.final_iteration = final_iteration
        self.final: list[dict] = []

    def __call__(self, iteration: int, z_best: np.ndarray) -> None:
        generated = to_uint8(self.gan.sample(z_best))
        final = []
        for idx, original, gz in zip(self.indices, self.originals, generated):
            folder = self.out_dir / str(idx)
            save_rgb(folder / "gz" / f"gz_{iteration}.jpg", gz)
            if self.mode == "latent":
                final.append({"blend_method": "none"})
                continue
            blended, method = self.blend(original, gz, self.known)
            overlaid = overlay(original, gz, self.known)
            save_rgb(folder / "gen_images" / f"gen_{iteration}.jpg", blended)
            save_rgb(folder / "gen_images_overlay" / f"gen_{iteration}.jpg", overlaid)
            if iteration == self.final_iteration:
                final.append({"blend_method": method,
                              **fill_quality.measure(original, blended, overlaid, self.known)})
        if iteration == self.final_iteration:
            self.final = final


def _save_latent(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".z.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
