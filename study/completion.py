"""Inpaint the test images with a trained GAN and write the study's folder layout.

Per test image ``<idx>`` (its position in the split's sorted test list):

    <idx>/original.jpg, masked.jpg
    <idx>/gen_images/gen_<i>.jpg          blended completion at iteration i
    <idx>/gen_images_overlay/gen_<i>.jpg  G(z) pasted into the hole, no blending
    <idx>/gz/gz_<i>.jpg                   G(z) itself
    <idx>/z.npz                           final z, final losses of every restart

``z.npz`` is written last, so its presence marks a finished image; reruns
skip those images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study.blend import overlay, poisson_blend
from study.images import Preprocessing, UnreadableImage, load_face, save_rgb, to_uint8, to_unit_range
from study.inpaint import InpaintSettings, LatentOptimizer, optimize_batch

log = logging.getLogger(__name__)

HIDDEN_FILL = 255  # hidden pixels are white in masked.jpg


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
    """Inpaint every selected test image; return counts and the blending methods used."""
    out_dir = Path(job.out_dir)
    indices, faces = select_images(job, prep)
    skipped = (min(job.end or len(job.names), len(job.names)) - job.start) - len(indices)
    if not indices:
        log.info("all %d images in range already completed in %s", skipped, out_dir)
        return {"completed": 0, "skipped": skipped, "methods": {}}
    optimizer = LatentOptimizer(gan, weights, settings)
    methods: dict[str, int] = {}
    bar = tqdm(total=len(indices), desc="inpaint", unit="img", disable=not job.progress)
    for begin in range(0, len(indices), job.batch_size):
        batch_idx = indices[begin:begin + job.batch_size]
        originals = np.stack(faces[begin:begin + job.batch_size])
        images = to_unit_range(originals)
        for idx, original in zip(batch_idx, originals):
            folder = out_dir / str(idx)
            save_rgb(folder / "original.jpg", original)
            masked = np.where(known[:, :, None] > 0.5, original, HIDDEN_FILL).astype(np.uint8)
            save_rgb(folder / "masked.jpg", masked)

        def write_iteration(iteration, z_best, batch_idx=batch_idx, originals=originals):
            generated = to_uint8(gan.sample(z_best))
            for idx, original, gz in zip(batch_idx, originals, generated):
                folder = out_dir / str(idx)
                blended, method = poisson_blend(original, gz, known)
                methods[method] = methods.get(method, 0) + 1
                save_rgb(folder / "gen_images" / f"gen_{iteration}.jpg", blended)
                save_rgb(folder / "gen_images_overlay" / f"gen_{iteration}.jpg",
                         overlay(original, gz, known))
                save_rgb(folder / "gz" / f"gz_{iteration}.jpg", gz)

        z_best, final_losses, best = optimize_batch(optimizer, images, batch_idx, job.iterations,
                                                    job.save_every, write_iteration)
        total, contextual, perceptual = optimizer.evaluate(z_best, images)
        for row, idx in enumerate(batch_idx):
            _save_latent(out_dir / str(idx) / "z.npz", z_best[row], final_losses[row], best[row],
                         total[row], contextual[row], perceptual[row], job.iterations)
        bar.update(len(batch_idx))
    bar.close()
    return {"completed": len(indices), "skipped": skipped, "methods": methods}


def _save_latent(path: Path, z, restart_losses, best, total, contextual, perceptual, iterations):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".z.tmp{os.getpid()}.npz")
    np.savez(tmp, z=np.asarray(z, np.float32), restart_losses=np.asarray(restart_losses, np.float32),
             best_restart=np.int64(best), loss=np.float32(total), contextual_loss=np.float32(contextual),
             perceptual_loss=np.float32(perceptual), iterations=np.int64(iterations))
    os.replace(tmp, path)

