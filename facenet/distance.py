"""Cosine distance between embeddings: ``1 - cos(a, b)``, in [0, 2].

A zero or non-finite vector has no direction, so its distance is NaN, never
a number that looks valid. A logged warning names its rows.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Matrix entries below this are recomputed from the unit-vector difference,
# which is exact for identical vectors and avoids cancellation in 1 - u.v.
_RECOMPUTE_BELOW = 1e-4


def _unit_rows(vectors: np.ndarray, role: str, labels: Sequence[str] | None) -> np.ndarray:
    """Return float64 unit rows of ``vectors [N, D]``, with NaN rows where a vector is zero or not finite."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    invalid = ~np.isfinite(norms) | (norms == 0)
    if invalid.any():
        rows = np.flatnonzero(invalid)
        names = [labels[row] for row in rows] if labels is not None else [str(row) for row in rows]
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        log.warning("%d %s vector(s) are zero or not finite, so their cosine distance is NaN: %s",
                    len(rows), role, shown)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = vectors / norms[:, None]
    unit[invalid] = np.nan
    return unit


def _as_rows(vectors: np.ndarray, name: str) -> np.ndarray:
    vectors = np.asarray(vectors)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2:
        raise ValueError(f"{name} must be a vector [D] or a matrix [N, D], got shape {vectors.shape}")
    return vectors


def cosine_distance(a: np.ndarray, b: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """Return the row-wise cosine distance of ``a [N, D]`` and ``b [N, D]`` as float64 ``[N]``.

    Computed as ``|u - v|^2 / 2`` on the unit vectors ``u``, ``v``, which
    equals ``1 - cos`` and is exactly 0 for identical rows. ``labels`` name
    the rows in the warning about zero or non-finite vectors.
    """
    a, b = _as_rows(a, "a"), _as_rows(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"cosine_distance needs two arrays of equal shape, got {a.shape} and {b.shape}")
    if labels is not None and len(labels) != len(a):
        raise ValueError(f"got {len(labels)} labels for {len(a)} rows")
    unit_a = _unit_rows(a, "first", labels)
    unit_b = _unit_rows(b, "second", labels)
    distance = 0.5 * np.sum((unit_a - unit_b) ** 2, axis=1)
    return np.clip(distance, 0.0, 2.0)


def cosine_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the cosine distance of every row of ``a [N, D]`` to every row of ``b [M, D]``: ``[N, M]``.

    Rows of ``a`` or ``b`` that are zero or not finite give NaN rows or columns.
    """
    a, b = _as_rows(a, "a"), _as_rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} and {b.shape[1]}")
    unit_a = _unit_rows(a, "first", None)
    unit_b = _unit_rows(b, "second", None)
    distance = 1.0 - unit_a @ unit_b.T
    rows, cols = np.nonzero(distance < _RECOMPUTE_BELOW)
    if len(rows):
        distance[rows, cols] = 0.5 * np.sum((unit_a[rows] - unit_b[cols]) ** 2, axis=1)
    return np.clip(distance, 0.0, 2.0)
