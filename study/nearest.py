"""Nearest training neighbours of face embeddings by cosine distance.

Cosine distance is ``1 - cos(a, b)`` in ``[0, 2]``: 0 for vectors pointing
the same way, 2 for opposite ones. The distances follow the rule of
:func:`facenet.distance.cosine_distance_matrix`, which the comparison stage
uses: float64 unit vectors, ``1 - u.v``, entries below ``RECOMPUTE_BELOW``
recomputed as ``|u - v|^2 / 2`` (exact 0 for identical directions), clipped
to ``[0, 2]``. This module re-exports ``cosine_distance``.

The training set can hold hundreds of thousands of vectors, so
:func:`nearest_neighbors` walks it ``chunk`` rows at a time and keeps a
running top-k per query. Memory does not grow with the training set: the
temporaries are one float64 matrix of ``[QUERY_BLOCK, chunk]``, reused for
every chunk, and the chunk's unit vectors. benchmarks/nearest.py measures
time and peak memory (see docs/BENCHMARKS.md).

Zero vectors and rows with NaN or infinite entries have no direction. They
are left out of the search with a warning that names them: such a training
row is never returned as a neighbour, and such a query gets index -1 and
distance NaN.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from facenet.distance import cosine_distance

__all__ = ["cosine_distance", "describe_rows", "nearest_neighbors", "valid_rows"]

log = logging.getLogger(__name__)

# Queries compared with one training chunk at a time, which bounds memory
# when the query set is large as well.
QUERY_BLOCK = 1024
# Rows converted to float64 at a time while checking validity.
VALIDITY_BLOCK = 65536
# Invalid rows named in one warning. The count covers the rest.
MAX_NAMED_ROWS = 20
# Distances below this are recomputed from the unit-vector difference, the
# same threshold as facenet.distance (tests/test_underfit.py compares both).
RECOMPUTE_BELOW = 1e-4
# Up to this k, the k smallest distances of a block are picked by repeated
# argmin, which is several times faster than argpartition for a small k.
SMALL_K = 16


def valid_rows(vectors: np.ndarray) -> np.ndarray:
    """Return a bool mask ``[N]`` of rows with a finite, non-zero float64 L2 norm.

    This is the rule :mod:`facenet.distance` applies, so a row that passes
    never gets a NaN distance there.
    """
    vectors = np.asarray(vectors)
    mask = np.zeros(vectors.shape[0], dtype=bool)
    # The float64 norm of float32 or float16 entries can neither overflow nor
    # underflow to 0, so for those it is finite and non-zero exactly when all
    # entries are finite and one is non-zero, which needs no float64 copy.
    narrow = vectors.dtype in (np.float32, np.float16)
    for start in range(0, vectors.shape[0], VALIDITY_BLOCK):
        block = vectors[start:start + VALIDITY_BLOCK]
        if narrow:
            mask[start:start + VALIDITY_BLOCK] = np.isfinite(block).all(axis=1) & (block != 0).any(axis=1)
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(block.astype(np.float64), axis=1)
        mask[start:start + VALIDITY_BLOCK] = np.isfinite(norms) & (norms > 0)
    return mask


def describe_rows(rows: Sequence[int], keys: Sequence[str] | None) -> str:
    """Name ``rows`` by their keys (or row numbers), at most MAX_NAMED_ROWS of them."""
    names = [str(keys[row]) if keys is not None else f"row {row}" for row in rows[:MAX_NAMED_ROWS]]
    text = ", ".join(names)
    if len(rows) > MAX_NAMED_ROWS:
        text += f" and {len(rows) - MAX_NAMED_ROWS} more"
    return text


def _unit_rows(vectors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Return the float64 unit vectors of valid rows ``[N, D]``, written into ``out`` when given."""
    if out is None:
        unit = vectors.astype(np.float64)
    else:
        np.copyto(out, vectors)
        unit = out
    # einsum sums the squares without the [N, D] temporary that np.linalg.norm makes.
    unit /= np.sqrt(np.einsum("ij,ij->i", unit, unit))[:, None]
    return unit


def _distances(unit_queries: np.ndarray, unit_train: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write the cosine distances ``[Q, C]`` of unit rows into ``out``, the rule of facenet.distance."""
    np.matmul(unit_queries, unit_train.T, out=out)
    np.subtract(1.0, out, out=out)
    # Near-identical pairs are rare, and the minimum finds out whether there
    # are any without the boolean temporary and scan of np.nonzero.
    if out.size and out.min() < RECOMPUTE_BELOW:
        rows, columns = np.nonzero(out < RECOMPUTE_BELOW)
        out[rows, columns] = 0.5 * np.sum((unit_queries[rows] - unit_train[columns]) ** 2, axis=1)
    return np.clip(out, 0.0, 2.0, out=out)


def _smallest_by_argmin(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(columns, values)`` of the ``k`` smallest entries per row, overwriting them with inf.

    argmin returns the first of equal minima, so ties go to the lower column.
    """
    rows = np.arange(distances.shape[0])
    picked = np.empty((distances.shape[0], k), dtype=np.int64)
    values = np.empty((distances.shape[0], k))
    for j in range(k):
        column = distances.argmin(axis=1)
        picked[:, j] = column
        values[:, j] = distances[rows, column]
        distances[rows, column] = np.inf
    return picked, values


def _block_top_k(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(columns, values)`` of the ``min(k, C)`` smallest entries of each row.

    Among equal values the lower column wins, which is what makes the chunked
    search return the same neighbours as a full sort. May overwrite ``distances``.
    """
    rows, columns = distances.shape
    if columns <= k:
        return np.broadcast_to(np.arange(columns), (rows, columns)), distances
    if k <= SMALL_K:
        return _smallest_by_argmin(distances, k)
    picked = np.argpartition(distances, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(distances, picked, axis=1)
    # argpartition picks an arbitrary subset of the entries equal to the k-th
    # value. Rows where it left out some of them are redone with a full sort.
    kth = values.max(axis=1, keepdims=True)
    ties_total = np.count_nonzero(distances == kth, axis=1)
    ties_picked = np.count_nonzero(values == kth, axis=1)
    for row in np.flatnonzero(ties_total > ties_picked):
        order = np.lexsort((np.arange(columns), distances[row]))[:k]
        picked[row] = order
        values[row] = distances[row, order]
    return picked, values


def _merge_top_k(best_index, best_distance, new_index, new_distance, k):
    """Keep the ``k`` smallest ``(distance, index)`` pairs of the old and new candidates."""
    index = np.concatenate([best_index, new_index], axis=1)
    distance = np.concatenate([best_distance, new_distance], axis=1)
    order = np.lexsort((index, distance), axis=1)[:, :k]
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(distance, order, axis=1)


def nearest_neighbors(queries: np.ndarray, train: np.ndarray, k: int, chunk: int = 20000,
                      query_keys: Sequence[str] | None = None,
                      train_keys: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` training rows closest to each query by cosine distance.

    ``queries`` is ``[Q, D]`` and ``train`` ``[N, D]``, any float dtype. Returns
    ``(indices, distances)``: int64 and float64 arrays ``[Q, m]`` where
    ``m = min(k, number of valid training rows)``, sorted by distance, with
    ties going to the lower training index. Invalid queries get index -1 and
    distance NaN in every column. The optional keys only name invalid rows in
    the warnings.

    Raises ValueError for an empty training set, a training set without a
    single valid row, ``k < 1``, ``chunk < 1`` or differing vector lengths.
    """
    queries = np.asarray(queries)
    train = np.asarray(train)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 row, got {chunk}")
    if train.ndim != 2 or train.shape[0] == 0:
        raise ValueError(f"the training set is empty (shape {train.shape}); "
                         "nearest neighbours need at least one training vector")
    if queries.ndim != 2 or queries.shape[1] != train.shape[1]:
        raise ValueError(f"queries must be [Q, {train.shape[1]}] like the training vectors, "
                         f"got shape {queries.shape}")

    train_valid = valid_rows(train)
    n_valid = int(train_valid.sum())
    if n_valid < train.shape[0]:
        bad = np.flatnonzero(~train_valid)
        log.warning("%d of %d training vector(s) are zero or not finite and are left out of the "
                    "search: %s", len(bad), train.shape[0], describe_rows(bad, train_keys))
    if n_valid == 0:
        raise ValueError(f"none of the {train.shape[0]} training vectors is usable "
                         "(all are zero or contain NaN/inf); recompute the training embeddings")
    k = min(k, n_valid)

    query_valid = valid_rows(queries)
    if not query_valid.all():
        bad = np.flatnonzero(~query_valid)
        log.warning("%d of %d query vector(s) are zero or not finite and get no neighbour "
                    "(distance NaN): %s", len(bad), queries.shape[0], describe_rows(bad, query_keys))
    query_rows = np.flatnonzero(query_valid)
    unit_queries = _unit_rows(queries[query_rows])

    # Slots start at +inf with the largest index, so any real candidate
    # replaces them.
    best_index = np.full((len(query_rows), k), np.iinfo(np.int64).max, dtype=np.int64)
    best_distance = np.full((len(query_rows), k), np.inf)
    # Buffers reused by every chunk: allocating these large arrays anew each
    # time costs page faults that take as long as the arithmetic.
    chunk_rows = min(chunk, train.shape[0])
    unit_buffer = np.empty((chunk_rows, train.shape[1]))
    distance_buffer = np.empty(min(QUERY_BLOCK, len(query_rows)) * chunk_rows)
    for start in range(0, train.shape[0], chunk):
        # Global indices of this chunk's valid rows, in ascending order.
        columns = start + np.flatnonzero(train_valid[start:start + chunk])
        if len(columns) == 0:
            continue
        block = train[start:start + chunk] if len(columns) == chunk_rows else train[columns]
        unit_train = _unit_rows(block, out=unit_buffer[:len(columns)])
        for q_start in range(0, len(query_rows), QUERY_BLOCK):
            q_stop = q_start + QUERY_BLOCK
            batch = unit_queries[q_start:q_stop]
            out = distance_buffer[:len(batch) * len(columns)].reshape(len(batch), len(columns))
            distances = _distances(batch, unit_train, out)
            picked, values = _block_top_k(distances, k)
            best_index[q_start:q_stop], best_distance[q_start:q_stop] = _merge_top_k(
                best_index[q_start:q_stop], best_distance[q_start:q_stop],
                columns[picked], values, k)

    indices = np.full((queries.shape[0], k), -1, dtype=np.int64)
    distances = np.full((queries.shape[0], k), np.nan)
    indices[query_rows] = best_index
    distances[query_rows] = best_distance
    return indices, distances
