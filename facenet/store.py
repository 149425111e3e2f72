"""Embedding files: one ``.npz`` per image source and embedding protocol.

A file ``<source>__<protocol>.npz`` contains one entry per image in
``keys``, ``paths``, ``sha256`` (of the file bytes), ``face_found`` and
``embeddings`` (float32 ``[N, D]``). Keys are unique: the file name for
train/test images, the test index for inpaintings and image-database entries.
Scalars record the ``protocol``, the ``source``, the ``preprocessing`` (JSON
of how pixels were read) and ``complete`` (False while a run is still adding
images). Every array has a plain dtype, so files load with
``allow_pickle=False``.

:func:`embed_images` fills a file batch by batch, rewriting it atomically
every few batches. A rerun reuses every vector whose file hash is already
stored, so a killed run resumes where it stopped. With ``workers`` > 1 the
batches are embedded in that many processes, each with its own backend.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from facenet.backends import EmbeddingBackend
from study.images import UnreadableImage
from study.provenance import sha256_file

log = logging.getLogger(__name__)

FILE_SUFFIX = ".npz"
SEPARATOR = "__"
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class ImageItem:
    """One image to embed: its unique key and its file."""

    key: str
    path: Path


@dataclass
class EmbeddingSet:
    """Contents of one embedding file, checked for consistent array lengths on construction."""

    keys: np.ndarray
    paths: np.ndarray
    sha256: np.ndarray
    face_found: np.ndarray
    embeddings: np.ndarray
    protocol: str
    source: str
    preprocessing: str
    complete: bool = True

    def __post_init__(self):
        self.keys = _string_array(self.keys)
        self.paths = _string_array(self.paths)
        self.sha256 = _string_array(self.sha256)
        self.face_found = np.asarray(self.face_found, dtype=bool).reshape(-1)
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        count = len(self.keys)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != count:
            raise ValueError(f"embeddings of {self.source!r} have shape {self.embeddings.shape}, "
                             f"expected [{count}, D] for {count} keys")
        for name in ("paths", "sha256", "face_found"):
            if len(getattr(self, name)) != count:
                raise ValueError(f"{name} of {self.source!r} has {len(getattr(self, name))} "
                                 f"entries, expected {count} (one per key)")
        if len(set(self.keys.tolist())) != count:
            raise ValueError(f"keys of {self.source!r} are not unique: "
                             f"{', '.join(_duplicates(self.keys.tolist())[:10])}")

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def rows_by_key(self) -> dict[str, int]:
        return {key: row for row, key in enumerate(self.keys.tolist())}


def _string_array(values) -> np.ndarray:
    # dtype=str gives a fixed-width unicode array, which np.load reads without pickle.
    return np.asarray(list(values), dtype=str).reshape(-1)


def _duplicates(values: Iterable[str]) -> list[str]:
    seen, repeated = set(), []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def embedding_file(directory: str | os.PathLike, source: str, protocol: str) -> Path:
    """Return ``<directory>/<source>__<protocol>.npz``.

    Raises ValueError when ``source`` or ``protocol`` is empty, contains
    ``__`` or characters other than letters, digits and ``._+-``.
    """
    for label, value in (("source", source), ("protocol", protocol)):
        if not _NAME_PART.match(value) or SEPARATOR in value:
            raise ValueError(f"invalid embedding {label} {value!r}: use letters, digits and "
                             f"'._+-', without '{SEPARATOR}'")
    return Path(directory) / f"{source}{SEPARATOR}{protocol}{FILE_SUFFIX}"


def save_embeddings(path: str | os.PathLike, data: EmbeddingSet) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{FILE_SUFFIX}")
    with open(tmp, "wb") as handle:
        np.savez(handle, keys=data.keys, paths=data.paths, sha256=data.sha256,
                 face_found=data.face_found, embeddings=data.embeddings,
                 protocol=np.asarray(data.protocol, dtype=str),
                 source=np.asarray(data.source, dtype=str),
                 preprocessing=np.asarray(data.preprocessing, dtype=str),
                 complete=np.asarray(bool(data.complete)))
    os.replace(tmp, path)
    return path


def load_embeddings(path: str | os.PathLike, protocol: str | None = None,
                    allow_partial: bool = False) -> EmbeddingSet:
    """Read an embedding file written by :func:`save_embeddings`.

    Raises ValueError naming both protocols when ``protocol`` is given and
    differs from the file's, and when the file is the partial result of an
    unfinished run (unless ``allow_partial``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}. Run "
                                "facenet/calculate_embeddings.py for this source first.")
    with np.load(path, allow_pickle=False) as npz:
        missing = [name for name in ("keys", "paths", "sha256", "face_found", "embeddings",
                                     "protocol", "source", "preprocessing", "complete")
                   if name not in npz.files]
        if missing:
            raise ValueError(f"{path} is not an embedding file: missing {', '.join(missing)}")
        data = EmbeddingSet(keys=npz["keys"], paths=npz["paths"], sha256=npz["sha256"],
                            face_found=npz["face_found"], embeddings=npz["embeddings"],
                            protocol=str(npz["protocol"]), source=str(npz["source"]),
                            preprocessing=str(npz["preprocessing"]),
                            complete=bool(npz["complete"]))
    if protocol is not None and data.protocol != protocol:
        raise ValueError(f"{path} contains embeddings of protocol {data.protocol!r}, expected "
                         f"protocol {protocol!r}; embeddings of different protocols are not "
                         "comparable, so recompute one of them with the same --embedder")
    if not data.complete and not allow_partial:
        raise ValueError(f"{path} is the partial result of an unfinished run; rerun the command "
                         "that wrote it to finish it")
    return data


def require_same_protocol(sets: Mapping[str, EmbeddingSet]) -> str:
    """Return the protocol shared by all ``sets`` (labelled by file or source).

    Raises ValueError naming two differing protocols and their labels.
    """
    # The protocol names the crop fraction to 6 significant digits. The exact
    # value is in each set's ``preprocessing`` and is not compared here.
    if not sets:
        raise ValueError("no embedding sets to compare")
    first_label, first = next(iter(sets.items()))
    for label, data in sets.items():
        if data.protocol != first.protocol:
            raise ValueError(
                f"embeddings of different protocols cannot be compared: {first_label} has "
                f"{first.protocol!r} but {label} has {data.protocol!r}; recompute them with "
                "the same --embedder and preprocessing")
    return first.protocol


def load_consistent(paths: Sequence[str | os.PathLike]) -> list[EmbeddingSet]:
    """Load several embedding files and check that they share one protocol."""
    sets = {str(path): load_embeddings(path) for path in paths}
    require_same_protocol(sets)
    return list(sets.values())


@dataclass
class EmbedResult:
    """Outcome of :func:`embed_images`: the saved set and what happened to each input."""

    path: Path
    embeddings: EmbeddingSet | None = None
    computed: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)


class _Accumulator:
    """Rows gathered during one run with their input positions, plus reusable vectors by file hash."""

    def __init__(self, previous: EmbeddingSet | None):
        self.positions: list[int] = []
        self.keys: list[str] = []
        self.paths: list[str] = []
        self.hashes: list[str] = []
        self.found: list[bool] = []
        self.vectors: list[np.ndarray] = []
        self.known: dict[str, tuple[np.ndarray, bool]] = {}
        self.previous = previous
        if previous is not None:
            for row, digest in enumerate(previous.sha256.tolist()):
                self.known[digest] = (previous.embeddings[row], bool(previous.face_found[row]))

    def add(self, position: int, item: ImageItem, digest: str, vector: np.ndarray,
            found: bool) -> None:
        self.positions.append(position)
        self.keys.append(item.key)
        self.paths.append(str(item.path))
        self.hashes.append(digest)
        self.found.append(bool(found))
        self.vectors.append(np.asarray(vector, dtype=np.float32))
        self.known[digest] = (self.vectors[-1], bool(found))

    def to_set(self, dim: int, protocol: str, source: str, preprocessing: str,
               complete: bool) -> EmbeddingSet:
        # Reused rows are added at once and computed rows a batch later, so
        # sort by input position to store the rows in the order of the items.
        order = sorted(range(len(self.positions)), key=self.positions.__getitem__)
        keys = [self.keys[row] for row in order]
        paths = [self.paths[row] for row in order]
        hashes = [self.hashes[row] for row in order]
        found = [self.found[row] for row in order]
        vectors = [self.vectors[row] for row in order]
        if not complete and self.previous is not None:
            # Keep the earlier file's rows not yet visited, so a kill before
            # the end loses none of the work done by earlier runs.
            done_keys, done_hashes = set(keys), set(hashes)
            prev = self.previous
            for row, (key, digest) in enumerate(zip(prev.keys.tolist(), prev.sha256.tolist())):
                if key not in done_keys and digest not in done_hashes:
                    keys.append(key)
                    paths.append(str(prev.paths[row]))
                    hashes.append(digest)
                    found.append(bool(prev.face_found[row]))
                    vectors.append(prev.embeddings[row])
        matrix = np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
        return EmbeddingSet(keys=keys, paths=paths, sha256=hashes, face_found=found,
                            embeddings=matrix, protocol=protocol, source=source,
                            preprocessing=preprocessing, complete=complete)


@dataclass
class _Batch:
    """Images of one batch, as ``(input position, item, file hash)``, and what embedding them gave."""

    entries: list[tuple[int, ImageItem, str]]
    embedded: list[tuple[int, ImageItem, str]] = field(default_factory=list)
    vectors: np.ndarray | None = None
    found: np.ndarray | None = None
    unreadable: list[str] = field(default_factory=list)


def _embed_batch(batch: _Batch, backend: EmbeddingBackend,
                 load_image: Callable[[Path], np.ndarray]) -> _Batch:
    """Decode and embed one batch. Files that do not decode are listed in ``batch.unreadable``."""
    images = []
    for entry in batch.entries:
        item = entry[1]
        try:
            images.append(load_image(item.path))
            batch.embedded.append(entry)
        except (UnreadableImage, OSError) as exc:
            batch.unreadable.append(f"{item.path} ({exc})")
    if images:
        batch.vectors, batch.found = backend.embed(images)
    return batch


# The backend of a worker process, built once by _start_worker.
_worker_backend: EmbeddingBackend | None = None


def _start_worker(backend_class: type[EmbeddingBackend], options: dict) -> None:
    global _worker_backend
    _worker_backend = backend_class(**options)


def _embed_batch_in_worker(batch: _Batch, load_image: Callable[[Path], np.ndarray]) -> _Batch:
    return _embed_batch(batch, _worker_backend, load_image)


class _BatchRunner:
    """Embed batches in this process, or in ``workers`` processes with results kept in submission order.

    Each worker decodes and embeds one batch at a time, and at most two
    batches per worker are submitted at once, so only ``workers`` batches
    are held decoded.
    """

    def __init__(self, backend: EmbeddingBackend, load_image: Callable[[Path], np.ndarray],
                 workers: int):
        self.backend = backend
        self.load_image = load_image
        self.workers = workers
        self.in_flight: deque[Future] = deque()
        self.pool = None
        if workers > 1:
            if backend.build_options is None:
                raise ValueError("workers > 1 needs a backend built with facenet.backends.get_backend, "
                                 "so that each worker process can build the same backend")
            # "spawn" because a forked copy of a process that already runs
            # TensorFlow or dlib threads can deadlock.
            self.pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(type(backend), backend.build_options))

    def submit(self, batch: _Batch) -> list[_Batch]:
        """Start embedding ``batch`` and return the batches finished so far, in submission order."""
        if self.pool is None:
            return [_embed_batch(batch, self.backend, self.load_image)]
        self.in_flight.append(self.pool.submit(_embed_batch_in_worker, batch, self.load_image))
        finished = []
        while len(self.in_flight) >= 2 * self.workers:
            finished.append(self.in_flight.popleft().result())
        return finished

    def finish(self) -> list[_Batch]:
        """Wait for every batch still in flight and return them in submission order."""
        finished = [future.result() for future in self.in_flight]
        self.in_flight.clear()
        return finished

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _read_previous(out_path: Path, protocol: str, source: str, preprocessing: str,
                   overwrite: bool) -> EmbeddingSet | None:
    if overwrite or not out_path.exists():
        return None
    previous = load_embeddings(out_path, protocol=protocol, allow_partial=True)
    if previous.source != source or previous.preprocessing != preprocessing:
        raise ValueError(
            f"{out_path} was made from source {previous.source!r} with preprocessing "
            f"{previous.preprocessing}, but this run embeds source {source!r} with "
            f"{preprocessing}; pass --overwrite to recompute it")
    if not previous.complete:
        log.info("resuming the unfinished embedding file %s (%d images done)", out_path, len(previous))
    return previous


def _same_contents(previous: EmbeddingSet | None, current: EmbeddingSet) -> bool:
    """Return True when ``previous`` is a finished file with exactly the rows of ``current``.

    The paths are not compared: they only record where the images were read,
    and in a moved experiment folder a rewrite for new paths would change the
    file, which later stages fingerprint as an input.
    """
    return (previous is not None and previous.complete
            and np.array_equal(previous.keys, current.keys)
            and np.array_equal(previous.sha256, current.sha256)
            and np.array_equal(previous.embeddings, current.embeddings))


def embed_images(items: Sequence[ImageItem], backend: EmbeddingBackend,
                 load_image: Callable[[Path], np.ndarray], out_path: str | os.PathLike,
                 source: str, preprocessing: str, batch_size: int = 64,
                 checkpoint_every: int = 10, checkpoint_seconds: float = 60.0,
                 overwrite: bool = False, progress: bool = True, workers: int = 1) -> EmbedResult:
    """Embed ``items`` in batches, write them to ``out_path`` and return the counts.

    Images whose sha256 is already in ``out_path`` (from an earlier or an
    interrupted run) are not embedded again unless ``overwrite``. Only one
    batch of decoded images is held in memory at a time, in each worker
    process with ``workers`` > 1. Files that ``load_image`` cannot read
    (UnreadableImage, OSError) are skipped and named in a warning. The file
    is rewritten, marked partial, once ``checkpoint_every`` batches and
    ``checkpoint_seconds`` have passed since the last save, and once more at
    the end, marked complete, with exactly the readable ``items`` in their
    order. The time floor keeps the rewrites of a file with 100,000s of rows
    from dominating the run.

    With ``workers`` > 1, batches are embedded in that many processes, each
    building the backend again from ``backend.build_options`` (set by
    get_backend), and ``load_image`` must be picklable.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    duplicated = _duplicates(item.key for item in items)
    if duplicated:
        raise ValueError(f"image keys must be unique, but these repeat: {', '.join(duplicated[:10])}")
    out_path = Path(out_path)
    protocol = backend.protocol_name()
    previous = _read_previous(out_path, protocol, source, preprocessing, overwrite)
    if previous is not None and len(previous) and previous.dim != backend.dim:
        raise ValueError(f"{out_path} contains {previous.dim}-D embeddings but the {backend.name} "
                         f"backend makes {backend.dim}-D ones; pass --overwrite to recompute it")

    rows = _Accumulator(previous)
    result = EmbedResult(path=out_path)
    pending: list[tuple[int, ImageItem, str]] = []
    batches_since_save = 0
    last_save = time.monotonic()
    bar = tqdm(total=len(items), desc=f"embed {source}", unit="img", disable=not progress)

    def record(finished: list[_Batch]) -> None:
        nonlocal batches_since_save, last_save
        for batch in finished:
            result.unreadable.extend(batch.unreadable)
            if batch.embedded:
                for (position, item, digest), vector, face_found in zip(
                        batch.embedded, batch.vectors, batch.found):
                    rows.add(position, item, digest, vector, face_found)
                result.computed += len(batch.embedded)
            bar.update(len(batch.entries))
            batches_since_save += 1
        now = time.monotonic()
        if batches_since_save >= checkpoint_every and now - last_save >= checkpoint_seconds:
            save_embeddings(out_path, rows.to_set(backend.dim, protocol, source, preprocessing,
                                                  complete=False))
            batches_since_save = 0
            last_save = now

    runner = _BatchRunner(backend, load_image, workers)
    try:
        for position, item in enumerate(items):
            try:
                digest = sha256_file(item.path)
            except OSError as exc:
                result.unreadable.append(f"{item.path} ({exc.strerror or exc})")
                bar.update(1)
                continue
            if digest in rows.known:
                vector, found = rows.known[digest]
                rows.add(position, item, digest, vector, found)
                result.reused += 1
                bar.update(1)
                continue
            pending.append((position, item, digest))
            if len(pending) >= batch_size:
                record(runner.submit(_Batch(list(pending))))
                pending.clear()
        if pending:
            record(runner.submit(_Batch(list(pending))))
        record(runner.finish())
    finally:
        runner.close()
        bar.close()

    result.embeddings = rows.to_set(backend.dim, protocol, source, preprocessing, complete=True)
    if _same_contents(previous, result.embeddings):
        log.info("%s: all %d images already embedded in %s; file left as it is",
                 source, len(result.embeddings), out_path)
    else:
        save_embeddings(out_path, result.embeddings)
    if result.unreadable:
        shown = "; ".join(result.unreadable[:20])
        more = f"; and {len(result.unreadable) - 20} more" if len(result.unreadable) > 20 else ""
        log.warning("skipped %d unreadable image(s) of %s: %s%s", len(result.unreadable), source,
                    shown, more)
    not_found = int((~result.embeddings.face_found).sum())
    log.info("%s: %d images embedded, %d reused from earlier runs, %d without a detected face "
             "-> %s", source, result.computed, result.reused, not_found, out_path)
    return result
