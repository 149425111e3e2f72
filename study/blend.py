"""Poisson blending of a generated patch into the hole, safe at image borders."""

from __future__ import annotations

import cv2
import numpy as np

# Padding around image and mask before cloning: seamlessClone needs the hole
# to stay clear of the image border, so holes that touch it are cloned in a
# reflected, enlarged copy and the result is cropped back.
BORDER_PAD = 8


def overlay(original: np.ndarray, generated: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Known pixels from ``original``, hidden ones from ``generated`` (uint8 ``[H, W, 3]``)."""
    keep = known[:, :, None] > 0.5
    return np.where(keep, original, generated).astype(np.uint8)


def poisson_blend(original: np.ndarray, generated: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, str]:
    """Blend ``generated`` into the hidden region of ``original``; return ``(image, method)``.

    ``method`` is ``"poisson"`` when OpenCV's seamlessClone (NORMAL_CLONE)
    produced the image, or ``"overlay"`` when nothing is hidden or cloning
    failed, in which case the plain overlay is returned. Inputs are uint8 RGB
    ``[H, W, 3]`` and the mask ``[H, W]`` (1 = known); none of them is modified.
    """
    hole = (np.asarray(known) < 0.5).astype(np.uint8) * 255
    if not hole.any():
        return overlay(original, generated, known), "overlay"
    pad = BORDER_PAD
    src = cv2.copyMakeBorder(np.ascontiguousarray(generated), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dst = cv2.copyMakeBorder(np.ascontiguousarray(original), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    padded_hole = cv2.copyMakeBorder(hole, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(padded_hole)
    # seamlessClone centres the mask's bounding box on this point; for the
    # patch to stay in place the centre must be the box's own centre.
    center = (x + w // 2, y + h // 2)
    try:
        blended = cv2.seamlessClone(src, dst, padded_hole, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return overlay(original, generated, known), "overlay"
    height, width = original.shape[:2]
    return np.ascontiguousarray(blended[pad:pad + height, pad:pad + width]), "poisson"
