"""Poisson blending of a generated patch into the hole (Pérez et al. 2003, "Poisson Image Editing").

For every hidden pixel p with in-image 4-neighbours N(p) the blended value f_p solves

    |N(p)| f_p - sum_{q in N(p), q hidden} f_q
        = sum_{q in N(p), q known} original_q + sum_{q in N(p)} (generated_p - generated_q)

so the fill keeps the gradients of G(z) and meets the known pixels at the
hole's edge. Neighbours outside the image are left out, which is a
zero-gradient (Neumann) condition at the image border. Known pixels are
copied unchanged, and no hidden pixel of the original is ever read.

OpenCV's seamlessClone (NORMAL_CLONE), the study's blending, takes the
outermost pixels of its mask from the destination image. With the original
as destination, the blended completion keeps the true pixels in a one-pixel
ring of every hole, which is all of each 1-pixel hole of the ``random`` mask
and (in opencv-python-headless 5.1) every 3x3 hole of ``grid``. It stays
available as the ``opencv`` blender to reproduce the study; ``poisson`` is
the default.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu

# (dy, dx) of the 4-neighbourhood.
_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def overlay(original: np.ndarray, generated: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Known pixels from ``original``, hidden ones from ``generated`` (uint8 ``[H, W, 3]``)."""
    keep = known[:, :, None] > 0.5
    return np.where(keep, original, generated).astype(np.uint8)


class _PoissonSystem:
    """The sparse system of one mask, factorized once and solved for any pair of images."""

    def __init__(self, hidden: np.ndarray):
        height, width = hidden.shape
        self.hidden = hidden
        self.rows, self.cols = np.nonzero(hidden)
        count = len(self.rows)
        index = np.full(hidden.shape, -1, np.int64)
        index[self.rows, self.cols] = np.arange(count)
        diagonal = np.zeros(count)
        off_rows, off_cols = [], []
        # Per direction: which unknowns have that neighbour in the image, and where it is.
        self.links = []
        for dy, dx in _NEIGHBOURS:
            ny, nx = self.rows + dy, self.cols + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            diagonal += inside
            neighbour_index = np.full(count, -1, np.int64)
            neighbour_index[inside] = index[ny[inside], nx[inside]]
            unknown = neighbour_index >= 0
            off_rows.append(np.nonzero(unknown)[0])
            off_cols.append(neighbour_index[unknown])
            self.links.append((inside, ny, nx, inside & ~unknown))
        rows = np.concatenate([np.arange(count), *off_rows])
        cols = np.concatenate([np.arange(count), *off_cols])
        values = np.concatenate([diagonal, -np.ones(sum(len(r) for r in off_rows))])
        self.factor = splu(csc_matrix((values, (rows, cols)), shape=(count, count)))

    def solve(self, original: np.ndarray, generated: np.ndarray) -> np.ndarray:
        source = generated.astype(np.float64)
        target = original.astype(np.float64)
        rhs = np.zeros((len(self.rows), source.shape[2]))
        centre = source[self.rows, self.cols]
        for inside, ny, nx, known_neighbour in self.links:
            rhs[inside] += centre[inside] - source[ny[inside], nx[inside]]
            rhs[known_neighbour] += target[ny[known_neighbour], nx[known_neighbour]]
        result = original.copy()
        values = self.factor.solve(rhs)
        result[self.rows, self.cols] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return result


@functools.lru_cache(maxsize=8)
def _system(hidden_bytes: bytes, shape: tuple[int, int]) -> _PoissonSystem:
    return _PoissonSystem(np.frombuffer(hidden_bytes, dtype=bool).reshape(shape))


def poisson_blend(original: np.ndarray, generated: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, str]:
    """Blend ``generated`` into the hidden region of ``original``; return ``(image, method)``.

    ``method`` is ``"poisson"`` when the Poisson equation was solved, or
    ``"overlay"`` when there is nothing to solve (no pixel hidden, or no
    pixel known to anchor the fill), in which case the plain overlay is
    returned. Inputs are uint8 RGB ``[H, W, 3]`` and the mask ``[H, W]``
    (1 = known); none of them is modified.
    """
    hidden = np.ascontiguousarray(np.asarray(known) < 0.5)
    if not hidden.any() or hidden.all():
        return overlay(original, generated, known), "overlay"
    system = _system(hidden.tobytes(), hidden.shape)
    return system.solve(np.asarray(original), np.asarray(generated)), "poisson"


# Padding around image and mask before seamlessClone, which needs the hole to
# stay clear of the image border: holes that touch it are cloned in a
# reflected, enlarged copy and the result is cropped back.
BORDER_PAD = 8


def opencv_blend(original: np.ndarray, generated: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, str]:
    """Blend with OpenCV's seamlessClone (NORMAL_CLONE), as the study did.

    Returns ``(image, "opencv")``, or the plain overlay and ``"overlay"`` when
    nothing is hidden or OpenCV rejects the mask (a hole one pixel high,
    for example). The hole's outer ring keeps the original's pixels; see the
    module docstring.
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
    # patch to stay in place it must be the box's own centre.
    center = (x + w // 2, y + h // 2)
    try:
        blended = cv2.seamlessClone(src, dst, padded_hole, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return overlay(original, generated, known), "overlay"
    height, width = original.shape[:2]
    return np.ascontiguousarray(blended[pad:pad + height, pad:pad + width]), "opencv"


BLENDERS = {"poisson": poisson_blend, "opencv": opencv_blend}
