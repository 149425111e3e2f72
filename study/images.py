"""Image decoding and the one preprocessing every stage applies.

Every place that reads a face (conversion to TFRecords, inpainting, the image
database, embeddings) calls :func:`load_face` so the pixels a GAN was trained
on and the pixels it is evaluated on go through identical steps:

1. decode to exactly 3 RGB channels (grayscale, RGBA and palette images are
   converted; a truncated or non-image file raises :class:`UnreadableImage`);
2. take the central square whose side is the short edge;
3. keep its central ``crop_fraction`` (default 64/82, the study's slight zoom);
4. resize to ``size`` x ``size`` (default 64) with area interpolation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SIZE = 64
DEFAULT_CROP_FRACTION = 64 / 82
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class UnreadableImage(ValueError):
    """A file that does not decode completely as an image."""


@dataclass(frozen=True)
class Preprocessing:
    """The crop and resize applied to every face; stored with each output."""

    size: int = IMAGE_SIZE
    crop_fraction: float = DEFAULT_CROP_FRACTION

    def __post_init__(self):
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        if self.size < 8:
            raise ValueError(f"image size must be at least 8 pixels, got {self.size}")

    def as_dict(self) -> dict:
        return {"size": self.size, "crop_fraction": self.crop_fraction}


def decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a uint8 array ``[H, W, 3]`` in RGB order.

    Raises UnreadableImage for files that are not images or are truncated;
    PIL raises on truncation where OpenCV would silently fill the rest grey.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: scale to 8 bits instead of clipping.
                arr = np.asarray(img, dtype=np.float64)
                peak = arr.max() if arr.max() > 0 else 1.0
                arr = np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Composite on black so transparent pixels do not keep stale colours.
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, img)
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"{path}: not a readable image ({exc})") from exc


def crop_and_resize(rgb: np.ndarray, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """Center-crop ``rgb`` ``[H, W, 3]`` and resize it to ``[size, size, 3]`` uint8."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    crop = max(1, int(round(side * prep.crop_fraction)))
    top = (height - crop) // 2
    left = (width - crop) // 2
    square = rgb[top:top + crop, left:left + crop]
    interpolation = cv2.INTER_AREA if crop >= prep.size else cv2.INTER_CUBIC
    out = cv2.resize(square, (prep.size, prep.size), interpolation=interpolation)
    return np.ascontiguousarray(out, dtype=np.uint8)


def load_face(path: str | os.PathLike, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """Decode and preprocess one face: uint8 ``[size, size, 3]`` RGB."""
    return crop_and_resize(decode_rgb(path), prep)


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """Map uint8 pixels to float32 in [-1, 1] (x / 127.5 - 1)."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map float images in [-1, 1] back to uint8, rounding and clipping."""
    return np.clip(np.rint((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def list_image_files(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Return ``(candidates, others)``: files with an image extension, sorted, and the rest.

    Raises FileNotFoundError naming the folder when it does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {folder}. Pass the folder that contains the face images "
            "(for CelebA, the extracted img_align_celeba folder; download.py fetches it)."
        )
    candidates, others = [], []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        (candidates if entry.suffix.lower() in IMAGE_EXTENSIONS else others).append(entry)
    return candidates, others


def short_edge(path: str | os.PathLike) -> int:
    """Return the short edge of an image in pixels without decoding all of it."""
    with Image.open(path) as img:
        return min(img.size)


def save_rgb(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 RGB image atomically: a temporary name first, then a rename.

    A kill mid-write leaves at worst a stray ``.tmp`` file, never a truncated
    image under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    bgr = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(tmp), bgr, params):
        raise OSError(f"could not write image {tmp}")
    os.replace(tmp, path)
