"""Reference inpainters whose behaviour is known, measured exactly like the GANs.

Each baseline makes one image per test image. ``H`` is the hidden region of
the inpainting mask and ``N`` the test image's nearest training image in
pixel space:

- ``test``: the test image itself, an inpainter that generalizes perfectly.
  Its gap is ``-d(test, nearest train)``.
- ``mix25``, ``mix50``, ``mix75``: ``H`` filled with ``t * N + (1 - t) * test``
  for ``t`` = 0.25, 0.5 and 0.75, partial copies.
- ``copy``: ``H`` filled with the same region of ``N``, the output of an
  inpainter that memorized its training set.
- ``train``: all of ``N``. The GANs' gap is measured on G(z), the whole
  generated image, and a generator that memorized its training set returns
  ``N`` as G(z). This is the like-for-like overfitting reference for the gap.

``N`` is the training image with the smallest sum of squared differences to
the test image over the known pixels (``match="context"``, the only pixels an
inpainter receives) or over all pixels (``match="full"``), both after the
preprocessing of every stage (:func:`study.images.load_face`). Ties go to the
earlier training image of ``train.txt``.

The images are written losslessly as PNG, embedded with the backend and
protocol of the train and test embeddings, stored as
``<root>/embeddings/baseline_<name>__<protocol>.npz`` and compared with the
split by :func:`study.underfit.measure_source`, which writes
``<root>/underfit/baseline_<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from study import provenance
from study.images import Preprocessing, UnreadableImage, load_face, save_rgb
from study.layout import Layout
from study.masks import load_mask_file, make_mask, mask_names
from study.underfit import (BASELINE_PREFIX, UnderfitResult, find_embedding_file, load_embeddings,
                            load_split_inputs, measure_source)

log = logging.getLogger(__name__)

BASELINES_DIR = "baselines"
NEAREST_CSV = "nearest_pixels.csv"
SEARCH_INPUTS = "nearest_pixels.inputs.json"
MATCH_MODES = ("context", "full")
# Hidden pixels are white in masked.png, as complete.py draws them in masked.jpg.
MASKED_FILL = 255


@dataclass(frozen=True)
class Baseline:
    """One reference inpainter: the weight of the training image inside the hole, or all of it."""

    name: str
    label: str
    short_label: str
    train_weight: float
    whole_image: bool = False

    @property
    def source(self) -> str:
        return BASELINE_PREFIX + self.name


BASELINES = (
    Baseline("test", "test image (generalizing)", "test image", 0.0),
    Baseline("mix25", "25% train copy in hole", "25% copy", 0.25),
    Baseline("mix50", "50% train copy in hole", "50% copy", 0.5),
    Baseline("mix75", "75% train copy in hole", "75% copy", 0.75),
    Baseline("copy", "train copy in hole (overfitting)", "hole copy", 1.0),
    Baseline("train", "whole nearest train image", "train image", 1.0, whole_image=True),
)
_BY_SOURCE = {baseline.source: baseline for baseline in BASELINES}


def is_baseline(model: str) -> bool:
    """Return True for the name of a baseline's underfit folder, ``baseline_<name>``."""
    return model.startswith(BASELINE_PREFIX)


def baseline_label(model: str) -> str:
    """Return the plot label of a baseline folder name, such as ``baseline: test image (generalizing)``."""
    baseline = _BY_SOURCE.get(model)
    return f"baseline: {baseline.label if baseline else model[len(BASELINE_PREFIX):]}"


def baseline_short_label(model: str) -> str:
    """Return the figure label of a baseline folder name, such as ``baseline: test image``."""
    baseline = _BY_SOURCE.get(model)
    return f"baseline: {baseline.short_label if baseline else model[len(BASELINE_PREFIX):]}"


# --- the mask --------------------------------------------------------------------

def find_mask(layout: Layout, clipping: str, mask: str, size: int) -> tuple[np.ndarray, str]:
    """Return the known-pixel mask ``[size, size]`` (1 known, 0 hidden) and where it came from.

    The GANs' own mask is read from ``<completions>/<model>/test/mask.png``.
    When no model has one, the registered mask ``mask`` is built. Raises
    ValueError when two models were completed with different masks, and
    FileNotFoundError when there is neither a mask file nor a registered
    mask of that name.
    """
    completions_root = layout.completions("_", clipping, mask).parent.parent
    files = sorted(completions_root.glob("*/test/mask.png")) if completions_root.is_dir() else []
    if files:
        known = load_mask_file(files[0], size)
        for other in files[1:]:
            if not np.array_equal(load_mask_file(other, size), known):
                raise ValueError(f"the masks {files[0]} and {other} differ, so one baseline cannot "
                                 "match both models; complete every model with the same mask")
        return known, str(files[0])
    if mask not in mask_names():
        raise FileNotFoundError(f"no mask.png under {completions_root}/<model>/test and {mask!r} is "
                                f"not a registered mask ({', '.join(mask_names())}); run complete.py "
                                "first or choose a registered --maskType")
    log.info("no mask.png under %s; using the registered %r mask", completions_root, mask)
    return make_mask(mask, size), f"registered mask {mask!r}"


# --- nearest training image in pixel space --------------------------------------------

def nearest_by_pixels(queries: np.ndarray, batches: Iterable[tuple[int, np.ndarray, np.ndarray]],
                      compared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find the training image closest to each query by the sum of squared pixel differences.

    ``queries`` is uint8 ``[Q, H, W, 3]``. ``batches`` yields ``(start,
    images, readable)``: uint8 ``[C, H, W, 3]`` training images whose global
    indices begin at ``start``, and a bool ``[C]`` that is False for images
    that must not be picked. Only pixels where ``compared [H, W]`` is True
    count. Returns ``(indices [Q] int64, sse [Q] float64)``, index -1 and
    sse inf when no training image was readable. Ties go to the lower index.

    The sums are exact: every term is an integer below 2**16 and a sum over
    a 64x64x3 image stays below 2**30, far inside float64's 2**53 of exact
    integers, so the matrix product decides ties without rounding.
    """
    queries = np.asarray(queries)
    if queries.ndim != 4 or queries.dtype != np.uint8:
        raise ValueError(f"queries must be uint8 [Q, H, W, 3], got {queries.dtype} {queries.shape}")
    compared = np.asarray(compared, dtype=bool)
    if compared.shape != queries.shape[1:3]:
        raise ValueError(f"the pixel mask has shape {compared.shape}, expected {queries.shape[1:3]}")
    selected = np.broadcast_to(compared[:, :, None], queries.shape[1:]).reshape(-1)
    query_pixels = queries.reshape(len(queries), -1)[:, selected].astype(np.float64)
    query_norms = np.einsum("ij,ij->i", query_pixels, query_pixels)

    best_index = np.full(len(queries), -1, dtype=np.int64)
    best_sse = np.full(len(queries), np.inf)
    for start, images, readable in batches:
        rows = np.flatnonzero(readable)
        if rows.size == 0:
            continue
        train_pixels = images[rows].reshape(rows.size, -1)[:, selected].astype(np.float64)
        train_norms = np.einsum("ij,ij->i", train_pixels, train_pixels)
        sse = query_norms[:, None] + train_norms[None, :] - 2.0 * (query_pixels @ train_pixels.T)
        column = sse.argmin(axis=1)
        value = sse[np.arange(len(queries)), column]
        # Strictly smaller only: on a tie the earlier batch, with lower indices, keeps its pick.
        better = value < best_sse
        best_sse[better] = value[better]
        best_index[better] = start + rows[column[better]]
    return best_index, best_sse


def _load_or_none(path: Path, prep: Preprocessing) -> np.ndarray | None:
    try:
        return load_face(path, prep)
    except (UnreadableImage, FileNotFoundError):
        return None


def iter_face_batches(paths: list[Path], prep: Preprocessing, batch: int, workers: int,
                      unreadable: list[str], progress: bool = True
                      ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, faces, readable)`` for ``paths`` read ``batch`` at a time through load_face.

    Unreadable or missing files become zero images with ``readable`` False,
    and their paths are appended to ``unreadable``.
    """
    shape = (prep.size, prep.size, 3)
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc="pixel search", unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            faces = np.zeros((len(chunk), *shape), dtype=np.uint8)
            readable = np.zeros(len(chunk), dtype=bool)
            for row, face in enumerate(pool.map(lambda path: _load_or_none(path, prep), chunk)):
                if face is None:
                    unreadable.append(str(chunk[row]))
                else:
                    faces[row] = face
                    readable[row] = True
            bar.update(len(chunk))
            yield start, faces, readable


# --- composing the baseline images --------------------------------------------------------

def compose(test_face: np.ndarray, train_face: np.ndarray, known: np.ndarray,
            baseline: Baseline) -> np.ndarray:
    """Return the uint8 image of ``baseline`` for one test face and its nearest training face."""
    if baseline.whole_image:
        return train_face.copy()
    hidden = np.asarray(known) < 0.5
    image = test_face.astype(np.float64)
    weight = baseline.train_weight
    image[hidden] = weight * train_face[hidden] + (1.0 - weight) * image[hidden]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- the stage --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineConfig:
    root: str
    k: int = 5
    chunk: int = 20000
    pixel_chunk: int = 1000
    # Threads that decode training images during the pixel-space search.
    workers: int = 2
    clipping: str = "stochastic"
    mask: str = "center"
    match: str = "context"
    protocol: str | None = None
    embedder: str = "dlib"
    # Builds the embedding backend for the split's preprocessing. None builds
    # ``embedder`` with its default options, so scripts pass one that applies
    # their backend flags (facenet.options.backend_from_args).
    backend_factory: Callable[[Preprocessing], object] | None = None
    batch_size: int = 64
    identities: str | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.match not in MATCH_MODES:
            raise ValueError(f"invalid pixel match {self.match!r}; choose one of {', '.join(MATCH_MODES)}")
        for name in ("k", "chunk", "pixel_chunk", "workers", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def _load_test_faces(layout: Layout, names: list[str], prep: Preprocessing) -> tuple[list[int], np.ndarray]:
    """Return the indices and uint8 faces of the readable test images."""
    indices, faces, problems = [], [], []
    for idx, name in enumerate(names):
        face = _load_or_none(layout.test_images / name, prep)
        if face is None:
            problems.append(f"{idx} ({name})")
            continue
        indices.append(idx)
        faces.append(face)
    if problems:
        log.warning("%d test image(s) are missing or unreadable in %s and get no baseline: %s",
                    len(problems), layout.test_images, ", ".join(problems[:20]))
    if not faces:
        raise FileNotFoundError(f"no readable test images in {layout.test_images}; run "
                                "split_train_test.py first")
    return indices, np.stack(faces)


def find_nearest_train_images(config: BaselineConfig, layout: Layout, split, indices: list[int],
                              test_faces: np.ndarray, known: np.ndarray) -> pd.DataFrame:
    """Return ``idx, test_file, train_file, train_row, pixel_sse, pixel_rmse`` for every test face.

    The result is cached in ``<root>/baselines/nearest_pixels.csv`` with a
    record of its inputs, so a rerun with the same split, mask and
    preprocessing reads the file instead of all training images again.
    """
    out_dir = layout.root / BASELINES_DIR
    csv_path, record_path = out_dir / NEAREST_CSV, out_dir / SEARCH_INPUTS
    compared = known >= 0.5 if config.match == "context" else np.ones(known.shape, dtype=bool)
    inputs = json.loads(json.dumps({
        "match": config.match,
        "compared_pixels_sha256": hashlib.sha256(np.packbits(compared).tobytes()).hexdigest(),
        "train_list_sha256": provenance.sha256_lines(split.train_names),
        "test_list_sha256": provenance.sha256_lines(split.test_names),
        "test_indices": indices,
        "data_dir": str(split.data_dir), "preprocessing": split.prep.as_dict(),
    }, sort_keys=True))
    if (not config.overwrite and csv_path.is_file() and record_path.is_file()
            and provenance.read_json(record_path) == inputs):
        log.info("reusing the pixel-space nearest training images in %s", csv_path)
        return pd.read_csv(csv_path)

    if not compared.any():
        raise ValueError("the mask leaves no known pixel to match; use --pixel-match full")
    paths = [split.data_dir / name for name in split.train_names]
    unreadable: list[str] = []
    log.info("searching %d training image(s) for the pixel-space neighbours of %d test image(s) "
             "(%s pixels)", len(paths), len(indices), config.match)
    batches = iter_face_batches(paths, split.prep, config.pixel_chunk, config.workers, unreadable,
                                config.progress)
    rows, sse = nearest_by_pixels(test_faces, batches, compared)
    if unreadable:
        log.warning("%d training image(s) are missing or unreadable and cannot be neighbours: %s",
                    len(unreadable), "; ".join(unreadable[:10]))
    if (rows < 0).any():
        raise FileNotFoundError(f"none of the {len(paths)} training images in {split.data_dir} is "
                                "readable; check the split manifest's data_dir")
    table = pd.DataFrame({
        "idx": indices,
        "test_file": [split.test_names[idx] for idx in indices],
        "train_file": [split.train_names[row] for row in rows],
        "train_row": rows,
        "pixel_sse": sse,
        "pixel_rmse": np.sqrt(sse / (int(compared.sum()) * 3)),
    })
    provenance.write_text_atomic(csv_path, table.to_csv(index=False))
    provenance.write_json_atomic(record_path, inputs)
    return table


def write_baseline_images(layout: Layout, split, indices: list[int], test_faces: np.ndarray,
                          nearest: pd.DataFrame, known: np.ndarray) -> dict[str, dict[int, Path]]:
    """Write ``<root>/baselines/<name>/<idx>.png`` for every baseline, plus original and masked.

    Returns the written files by folder name and test index.
    """
    out_dir = layout.root / BASELINES_DIR
    train_of = dict(zip(nearest["idx"].astype(int), nearest["train_file"].astype(str)))
    files: dict[str, dict[int, Path]] = {name: {} for name in ("original", "masked")}
    files.update({baseline.name: {} for baseline in BASELINES})
    hidden = known < 0.5
    for idx, face in zip(indices, test_faces):
        train_face = load_face(split.data_dir / train_of[idx], split.prep)
        masked = face.copy()
        masked[hidden] = MASKED_FILL
        images = {"original": face, "masked": masked}
        images.update({baseline.name: compose(face, train_face, known, baseline) for baseline in BASELINES})
        for name, image in images.items():
            path = out_dir / name / f"{idx}.png"
            save_rgb(path, image)
            files[name][idx] = path
    return files


def embed_baselines(config: BaselineConfig, layout: Layout, split, files: dict[str, dict[int, Path]]) -> None:
    """Embed every baseline's images with the backend of the train and test embeddings.

    Raises ValueError when ``config.embedder`` makes embeddings of another
    protocol than the split's, because their distances would be meaningless.
    """
    from facenet.backends import get_backend
    from facenet.inputs import ExactSizeLoader
    from facenet.store import ImageItem, embed_images, embedding_file

    if config.backend_factory is not None:
        backend = config.backend_factory(split.prep)
    else:
        backend = get_backend(config.embedder, preprocessing=split.prep)
    protocol = backend.protocol_name()
    if protocol != split.protocol:
        raise ValueError(f"the {backend.name} backend makes embeddings of protocol {protocol!r}, but "
                         f"the train and test embeddings have protocol {split.protocol!r}; choose the "
                         "backend and options that made them (--embedder, --alignment, ...)")
    loader = ExactSizeLoader(split.prep.size)
    for baseline in BASELINES:
        items = [ImageItem(key=str(idx), path=path) for idx, path in sorted(files[baseline.name].items())]
        embed_images(items, backend, loader, embedding_file(layout.embeddings, baseline.source, protocol),
                     baseline.source, loader.describe(), batch_size=config.batch_size,
                     progress=config.progress)


def _check_earlier_results(layout: Layout, settings: dict, overwrite: bool) -> None:
    """Raise FileExistsError before any file changes when earlier baselines used other ``settings``.

    Without this check, new baseline images would replace the old ones and
    only then would the comparison stage reject replacing the old results,
    leaving images and results that do not belong together.
    """
    if overwrite:
        return
    for baseline in BASELINES:
        record = layout.underfit(baseline.source) / "inputs.json"
        if not record.is_file():
            continue
        earlier = provenance.read_json(record)
        differing = [f"{key}: earlier {earlier.get(key)!r}, now {value!r}"
                     for key, value in settings.items() if earlier.get(key) != value]
        if differing:
            raise FileExistsError(f"{record.parent} contains results made with other settings "
                                  f"({'; '.join(differing)}). Pass --overwrite to replace them.")


def run_baselines(config: BaselineConfig) -> list[UnderfitResult]:
    """Make, embed and measure every baseline on the test images of ``config.root``.

    Needs the split, the train and test embeddings and the training images.
    Returns one result per baseline, in the order of BASELINES.
    """
    layout = Layout(config.root)
    split = load_split_inputs(config.root, config.protocol)
    known, mask_source = find_mask(layout, config.clipping, config.mask, split.prep.size)
    # NOTE: mask_source contains the --root path, so in a copied or moved experiment
    # folder the baselines count as changed and need --overwrite to rerun.
    settings = {"baseline_settings_sha256": provenance.sha256_lines([
        config.match, mask_source, hashlib.sha256(np.packbits(known >= 0.5).tobytes()).hexdigest(),
        json.dumps(split.prep.as_dict(), sort_keys=True), str(split.data_dir),
        provenance.sha256_lines(split.train_names), provenance.sha256_lines(split.test_names)])}
    _check_earlier_results(layout, settings, config.overwrite)
    indices, test_faces = _load_test_faces(layout, split.test_names, split.prep)
    nearest = find_nearest_train_images(config, layout, split, indices, test_faces, known)
    files = write_baseline_images(layout, split, indices, test_faces, nearest, known)
    embed_baselines(config, layout, split, files)

    results = []
    search_sha256 = provenance.sha256_file(layout.root / BASELINES_DIR / NEAREST_CSV)
    for baseline in BASELINES:
        path = find_embedding_file(layout.embeddings, baseline.source, split.protocol, config.root)
        embeddings = load_embeddings(path, baseline.source, config.root)
        finals = {idx: {"original": files["original"][idx], "masked": files["masked"][idx],
                        "blended": image, "overlay": image, "gz": image, "iteration": None}
                  for idx, image in files[baseline.name].items()}
        extra_inputs = {"baseline": baseline.name, "mask": config.mask, "mask_source": mask_source,
                        "clipping": config.clipping, "match": config.match,
                        "nearest_pixels_sha256": search_sha256, **settings}
        results.append(measure_source(baseline.source, embeddings, split, finals, extra_inputs,
                                      config.root, config.k, config.chunk,
                                      identities=config.identities, overwrite=config.overwrite,
                                      progress=config.progress))
    return results
