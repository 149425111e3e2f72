"""Fill quality: how close a completion is to the original inside the hidden region.

Each metric compares two uint8 RGB images ``[H, W, 3]`` on the [0, 255]
scale and looks only at the hidden pixels (mask value 0):

- ``l1``: mean absolute error over the hidden pixels and their 3 channels,
  in [0, 255] units;
- ``psnr``: ``10 log10(255^2 / MSE)`` in dB, with the MSE over the same
  values; ``inf`` when the region is identical;
- ``ssim``: the SSIM map of Wang et al. 2004 with a uniform 7x7 window,
  K1 = 0.01, K2 = 0.03, sample covariances and reflected borders (the
  defaults of ``skimage.metrics.structural_similarity``), computed per
  channel, averaged over the channels and then over the hidden pixels. The
  windows of pixels at the edge of the hole reach into known pixels, so a
  seam between the fill and its surroundings lowers the score.

With nothing hidden every metric is NaN. complete.py stores the metrics of
the final iteration in each image's ``z.npz`` and rebuilds
``fill_quality.csv`` from those files at the end of every run, so a resumed
or split run ends with one row per completed image.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from study.images import UnreadableImage, decode_rgb

log = logging.getLogger(__name__)

CSV_NAME = "fill_quality.csv"
METRICS = ("l1_blended", "psnr_blended", "ssim_blended", "l1_overlay", "psnr_overlay", "ssim_overlay")
FIELDS = ("idx", *METRICS, "blend_method")
DATA_RANGE = 255.0
SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def hidden_pixels(known: np.ndarray) -> np.ndarray:
    """Boolean ``[H, W]``: True where the mask (1 = known) hides the pixel."""
    return np.asarray(known) < 0.5


def _window_mean(values: np.ndarray) -> np.ndarray:
    # BORDER_REFLECT repeats the edge pixel (dcba|abcd), like scipy.ndimage's "reflect".
    return cv2.blur(values, (SSIM_WINDOW, SSIM_WINDOW), borderType=cv2.BORDER_REFLECT)


def ssim_map(first: np.ndarray, second: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """Per-pixel SSIM ``[H, W]`` of two images ``[H, W, C]``, averaged over the channels."""
    x = np.asarray(first, np.float64)
    y = np.asarray(second, np.float64)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"expected two images of one shape [H, W, C], got {x.shape} and {y.shape}")
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {x.shape[1]}x{x.shape[0]}")
    count = SSIM_WINDOW * SSIM_WINDOW
    sample_correction = count / (count - 1)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    channels = []
    for channel in range(x.shape[2]):
        a = np.ascontiguousarray(x[:, :, channel])
        b = np.ascontiguousarray(y[:, :, channel])
        mean_a = _window_mean(a)
        mean_b = _window_mean(b)
        var_a = sample_correction * (_window_mean(a * a) - mean_a * mean_a)
        var_b = sample_correction * (_window_mean(b * b) - mean_b * mean_b)
        covariance = sample_correction * (_window_mean(a * b) - mean_a * mean_b)
        luminance = (2 * mean_a * mean_b + c1) / (mean_a ** 2 + mean_b ** 2 + c1)
        structure = (2 * covariance + c2) / (var_a + var_b + c2)
        channels.append(luminance * structure)
    return np.mean(channels, axis=0)


def region_l1(first: np.ndarray, second: np.ndarray, hidden: np.ndarray) -> float:
    """Mean absolute difference over the ``hidden`` pixels, in [0, 255] units; NaN if none."""
    if not hidden.any():
        return math.nan
    diff = np.abs(np.asarray(first, np.float64) - np.asarray(second, np.float64))
    return float(diff[hidden].mean())


def region_psnr(first: np.ndarray, second: np.ndarray, hidden: np.ndarray,
                data_range: float = DATA_RANGE) -> float:
    """PSNR in dB over the ``hidden`` pixels; ``inf`` when they match, NaN if none is hidden."""
    if not hidden.any():
        return math.nan
    diff = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    mse = float(np.mean(diff[hidden] ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def region_ssim(first: np.ndarray, second: np.ndarray, hidden: np.ndarray) -> float:
    """Mean of :func:`ssim_map` over the ``hidden`` pixels; NaN if none is hidden."""
    if not hidden.any():
        return math.nan
    return float(ssim_map(first, second)[hidden].mean())


def measure(original: np.ndarray, blended: np.ndarray, overlaid: np.ndarray, known: np.ndarray) -> dict:
    """Return the six METRICS of one completion: blended and overlay against ``original``."""
    hidden = hidden_pixels(known)
    result = {}
    for name, image in (("blended", blended), ("overlay", overlaid)):
        result[f"l1_{name}"] = region_l1(image, original, hidden)
        result[f"psnr_{name}"] = region_psnr(image, original, hidden)
        result[f"ssim_{name}"] = region_ssim(image, original, hidden)
    return result


def _read_rgb(path: Path) -> np.ndarray | None:
    try:
        return decode_rgb(path)
    except (UnreadableImage, FileNotFoundError):
        return None


def measure_saved_files(image_dir: Path, known: np.ndarray, iteration: int) -> dict:
    """Measure the saved JPEGs of one image's ``iteration``; NaN for absent files.

    Used for images completed before ``z.npz`` stored the metrics. JPEG
    compression of both images adds to the differences, so these values are
    slightly worse than the ones complete.py computes before saving.
    """
    original = _read_rgb(image_dir / "original.jpg")
    blended = _read_rgb(image_dir / "gen_images" / f"gen_{iteration}.jpg")
    overlaid = _read_rgb(image_dir / "gen_images_overlay" / f"gen_{iteration}.jpg")
    if original is None or blended is None or overlaid is None:
        return {metric: math.nan for metric in METRICS}
    return measure(original, blended, overlaid, known)


def read_row(image_dir: Path, known: np.ndarray) -> dict | None:
    """Return the CSV row of one completed image from its ``z.npz``, or None if it has none."""
    path = image_dir / "z.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        stored = dict(saved)
    row = {"idx": int(image_dir.name)}
    if all(metric in stored for metric in METRICS):
        row.update({metric: float(stored[metric]) for metric in METRICS})
    else:
        row.update(measure_saved_files(image_dir, known, int(stored["iterations"])))
    row["blend_method"] = str(stored["blend_method"]) if "blend_method" in stored else "unknown"
    return row


def _format(value) -> str:
    if isinstance(value, float):
        return repr(value) if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` with the FIELDS columns atomically; NaN is written as ``nan``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for row in rows:
            writer.writerow([_format(row[field]) for field in FIELDS])
    os.replace(tmp, path)


def rebuild_csv(out_dir: Path, known: np.ndarray) -> Path:
    """Rewrite ``<out_dir>/fill_quality.csv`` from every ``<out_dir>/<idx>/z.npz``, sorted by idx.

    NOTE: runs that share ``out_dir`` (a SLURM array) each rewrite the whole
    file when they end, so it is complete only after the last of them ends.
    """
    out_dir = Path(out_dir)
    folders = sorted((p for p in out_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                     key=lambda p: int(p.name))
    rows = [row for folder in folders if (row := read_row(folder, known)) is not None]
    path = out_dir / CSV_NAME
    write_csv(path, rows)
    log.info("wrote fill quality of %d image(s) to %s", len(rows), path)
    return path
