"""Image grids and mosaics written as PNG or JPEG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from study.images import save_rgb


def image_grid(images: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile uint8 images ``[N, H, W, 3]`` into one image, row by row, with white gaps."""
    images = np.asarray(images, dtype=np.uint8)
    count, height, width, channels = images.shape
    columns = columns or int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / columns))
    grid = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, channels),
                   255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, col = divmod(index, columns)
        top, left = row * (height + gap), col * (width + gap)
        grid[top:top + height, left:left + width] = image
    return grid


def save_grid(path: str | Path, images: np.ndarray, columns: int | None = None) -> None:
    save_rgb(path, image_grid(images, columns))
