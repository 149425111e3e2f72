"""Inpainting masks as data: a registry of named shapes plus user PNG masks.

A mask is float32 ``[H, W]`` with 1 for a known pixel and 0 for a hidden one
(the M of Yeh et al. 2017).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

MaskFactory = Callable[[int, int], np.ndarray]
_MASKS: dict[str, MaskFactory] = {}


def register_mask(name: str):
    def decorate(factory: MaskFactory) -> MaskFactory:
        _MASKS[name] = factory
        return factory
    return decorate


def mask_names() -> list[str]:
    return list(_MASKS)


@register_mask("center")
def _center(size: int, seed: int) -> np.ndarray:
    """The central half-size square hidden: 32x32 of 64x64, 25% of the pixels."""
    mask = np.ones((size, size), np.float32)
    lo, hi = size // 4, size - size // 4
    mask[lo:hi, lo:hi] = 0.0
    return mask


@register_mask("random")
def _random(size: int, seed: int) -> np.ndarray:
    """Each pixel hidden with probability 0.2, drawn with ``seed``."""
    return (np.random.default_rng(seed).random((size, size)) >= 0.2).astype(np.float32)


@register_mask("left")
def _left(size: int, seed: int) -> np.ndarray:
    mask = np.ones((size, size), np.float32)
    mask[:, : size // 2] = 0.0
    return mask


@register_mask("bottom")
def _bottom(size: int, seed: int) -> np.ndarray:
    mask = np.ones((size, size), np.float32)
    mask[size // 2:, :] = 0.0
    return mask


@register_mask("grid")
def _grid(size: int, seed: int) -> np.ndarray:
    """Only every 4th row and every 4th column known."""
    mask = np.zeros((size, size), np.float32)
    mask[::4, :] = 1.0
    mask[:, ::4] = 1.0
    return mask


@register_mask("full")
def _full(size: int, seed: int) -> np.ndarray:
    """Nothing hidden: with ``--mode latent`` the z that reproduces the whole image."""
    return np.ones((size, size), np.float32)


def make_mask(name: str, size: int = 64, seed: int = 0) -> np.ndarray:
    """Return the registered mask ``name``; KeyError lists the valid names."""
    if name not in _MASKS:
        raise KeyError(f"unknown mask type {name!r}; valid types: {', '.join(_MASKS)}")
    return _MASKS[name](size, seed)


def load_mask_file(path: str | Path, size: int = 64) -> np.ndarray:
    """Read a user's mask image: white (>= 128) is known, black is hidden.

    The image is resized to ``size`` x ``size`` with nearest-neighbour sampling.
    """
    import cv2

    path = Path(path)
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError(f"mask file {path} is not a readable image; give a black-and-white PNG "
                         "where white marks known pixels")
    if gray.shape != (size, size):
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_NEAREST)
    return (gray >= 128).astype(np.float32)


def importance_weights(mask: np.ndarray, window: int = 7) -> np.ndarray:
    """Importance-weighted context mask of Yeh et al. 2017, eq. 2.

    A known pixel weighs the fraction of hidden pixels in the ``window`` x
    ``window`` neighbourhood around it (pixels outside the image count as
    known); hidden pixels weigh 0.
    """
    hidden = 1.0 - mask.astype(np.float64)
    pad = window // 2
    padded = np.pad(hidden, pad, mode="constant", constant_values=0.0)
    # Summed-area table: the window sum at every pixel in O(H*W).
    table = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = mask.shape
    sums = (table[window:window + height, window:window + width] - table[:height, window:window + width]
            - table[window:window + height, :width] + table[:height, :width])
    return (mask * sums / (window * window)).astype(np.float32)
