"""Generalization gap: is a GAN's inpainting closer to its test face or to a training face?

For every test image ``idx`` with an embedding of its final G(z):

    d_test  = cosine distance of G(z) to the test original
    d_train = cosine distance of G(z) to its nearest training face
    gap     = d_test - d_train

A gap <= 0 means no training face is closer than the test face, and the
image goes to the ``generalized`` bucket. A positive gap means G(z) resembles
some training face more than the face it was asked to complete. Such images
go to the ``recall`` bucket. Images whose G(z) or test embedding is missing,
zero or not finite get NaN distances and the bucket ``excluded``.

Outputs under ``<root>/underfit/<model>/``: ``underfit.csv``, one mosaic per
image in ``generalized/<idx>.jpg`` or ``recall/<idx>.jpg``, ``inputs.json``
(what the results were made from, written last) and provenance records.
The reference inpainters of :mod:`study.baselines` go through the same
comparison and write to ``<root>/underfit/baseline_<name>/``.

With an identity file, ``underfit.csv`` also records whether the nearest
training face shows the same person as the test image. After a random
split the same celebrity can have images on both sides, so a positive gap
may come from a person's other photos rather than from memorization.
"""

from __future__ import annotations

import glob
import json
import logging
import re
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from study import provenance
from study.images import Preprocessing, UnreadableImage, decode_rgb, load_face, save_rgb
from study.layout import Layout
from study.nearest import cosine_distance, nearest_neighbors
from study.plots import image_grid
from study.split import final_iteration_file, read_identities, read_split_list

log = logging.getLogger(__name__)

INPAINT_PREFIX = "inpaint_"
# Embedding sources and underfit folders of the reference inpainters of study/baselines.py.
BASELINE_PREFIX = "baseline_"
EMBEDDING_ARRAYS = ("keys", "paths", "sha256", "face_found", "embeddings", "protocol", "source")
BUCKETS = ("generalized", "recall")
EXCLUDED = "excluded"
INPUTS_FILE = "inputs.json"
CSV_FILE = "underfit.csv"
TILE_SIZE = 64
MISSING_TILE_VALUE = 128  # grey tile where an image is missing or unreadable
_GZ_NAME = re.compile(r"^gz_(\d+)\.jpg$")


# --- embedding files -------------------------------------------------------

@dataclass(frozen=True)
class Embeddings:
    """One embedding file: rows of ``vectors`` float32 ``[N, D]`` named by ``keys``."""

    source: str
    protocol: str
    path: Path
    keys: np.ndarray
    paths: np.ndarray
    face_found: np.ndarray
    vectors: np.ndarray

    def row_of(self) -> dict[str, int]:
        return {str(key): row for row, key in enumerate(self.keys)}


def embedding_command(root: str | Path, source: str) -> str:
    """Return the command line that writes the embeddings of ``source``."""
    if source.startswith(BASELINE_PREFIX):
        return f"python underfit.py --root {shlex.quote(str(root))} --model none --baselines"
    base = f"python facenet/calculate_embeddings.py --root {shlex.quote(str(root))}"
    if source.startswith(INPAINT_PREFIX):
        return f"{base} --src inpaint --gan {shlex.quote(source[len(INPAINT_PREFIX):])}"
    return f"{base} --src {source}"


def find_embedding_file(embeddings_dir: Path, source: str, protocol: str | None,
                        root: str | Path) -> Path:
    """Return the path of ``<source>__<protocol>.npz``, or the only such file without ``protocol``.

    Raises FileNotFoundError (with the command that makes the file) when it
    is missing, and ValueError when several protocols exist and none is chosen.
    """
    found = sorted(embeddings_dir.glob(glob.escape(source) + "__*.npz"))
    present = [path.stem.partition("__")[2] for path in found]
    if protocol is not None:
        path = embeddings_dir / f"{source}__{protocol}.npz"
        if path.is_file():
            return path
        others = f" (protocols present for {source}: {', '.join(present)})" if present else ""
        raise FileNotFoundError(f"embeddings not found: {path}{others}. "
                                f"Make them with: {embedding_command(root, source)}")
    if not found:
        raise FileNotFoundError(f"embeddings not found: no {embeddings_dir / source}__<protocol>.npz. "
                                f"Make them with: {embedding_command(root, source)}")
    if len(found) > 1:
        raise ValueError(f"{len(found)} embedding protocols exist for {source} in {embeddings_dir} "
                         f"({', '.join(present)}); choose one with --protocol")
    return found[0]


def load_embeddings(path: Path, source: str, root: str | Path) -> Embeddings:
    """Load one embedding file and check its arrays. Raises ValueError naming an invalid file."""
    remake = f"Recompute it with: {embedding_command(root, source)}"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in EMBEDDING_ARRAYS if name not in data.files]
            if missing:
                raise ValueError(f"{path} lacks the array(s) {', '.join(missing)}. {remake}")
            arrays = {name: data[name] for name in EMBEDDING_ARRAYS}
            # Optional in the contract. The embedding stage writes False while it still adds rows.
            complete = bool(data["complete"]) if "complete" in data.files else True
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({exc}). {remake}") from exc

    if not complete:
        raise ValueError(f"{path} is the partial result of an unfinished embedding run. "
                         f"Finish it with: {embedding_command(root, source)}")
    vectors = np.asarray(arrays["embeddings"], dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{path}: 'embeddings' must be [N, D], got shape {vectors.shape}. {remake}")
    count = vectors.shape[0]
    for name in ("keys", "paths", "face_found"):
        if arrays[name].shape != (count,):
            raise ValueError(f"{path}: '{name}' has shape {arrays[name].shape}, expected ({count},) "
                             f"like the embeddings. {remake}")
    stored_source = str(arrays["source"])
    if stored_source != source:
        raise ValueError(f"{path} stores embeddings of source {stored_source!r}, expected {source!r}. "
                         f"{remake}")
    keys = arrays["keys"].astype(str)
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}: duplicate keys {', '.join(unique[counts > 1][:10])}. {remake}")
    return Embeddings(source=source, protocol=str(arrays["protocol"]), path=path, keys=keys,
                      paths=arrays["paths"].astype(str),
                      face_found=arrays["face_found"].astype(bool), vectors=vectors)


def check_same_protocol(sets: list[Embeddings]) -> str:
    """Return the protocol shared by ``sets``. Raises ValueError naming two files that differ."""
    first = sets[0]
    for other in sets[1:]:
        if other.protocol != first.protocol:
            raise ValueError(
                f"embedding protocols differ: {first.path} has protocol {first.protocol!r} but "
                f"{other.path} has {other.protocol!r}. Distances between them are meaningless; "
                "compute all embeddings with one protocol")
    return first.protocol


def check_same_dimension(sets: list[Embeddings]) -> None:
    """Raise ValueError when two embedding files have vectors of different lengths."""
    first = sets[0]
    for other in sets[1:]:
        if other.vectors.shape[1] != first.vectors.shape[1]:
            raise ValueError(f"embedding lengths differ: {first.path} has {first.vectors.shape[1]} "
                             f"dimensions but {other.path} has {other.vectors.shape[1]}")


def inpaint_models(embeddings_dir: Path, protocol: str | None = None) -> list[str]:
    """Return the models with an ``inpaint_<model>__<protocol>.npz`` file, sorted."""
    models = set()
    for path in embeddings_dir.glob(INPAINT_PREFIX + "*__*.npz"):
        source, _, file_protocol = path.stem.partition("__")
        if protocol is None or file_protocol == protocol:
            models.add(source[len(INPAINT_PREFIX):])
    return sorted(models)


# --- configuration and results ---------------------------------------------

@dataclass(frozen=True)
class UnderfitConfig:
    root: str
    model: str
    k: int = 5
    chunk: int = 20000
    clipping: str = "stochastic"
    mask: str = "center"
    protocol: str | None = None
    identities: str | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"--k must be at least 1, got {self.k}")
        if self.chunk < 1:
            raise ValueError(f"--chunk must be at least 1 row, got {self.chunk}")


@dataclass
class UnderfitResult:
    model: str
    csv_path: Path
    n_images: int
    n_excluded: int
    mean_gap: float
    buckets: dict
    already_done: bool
    # Share of the measured images whose nearest training face shows the test
    # image's person, over the images whose identities are known. NaN when
    # the run had no identity file.
    same_identity_rate: float = float("nan")
    n_identity_known: int = 0


def _result_from_table(model: str, csv_path: Path, table: pd.DataFrame,
                       already_done: bool) -> UnderfitResult:
    gaps = table["gap"].to_numpy(dtype=np.float64)
    valid = ~np.isnan(gaps)
    rate, known = float("nan"), 0
    if "same_identity" in table.columns:
        same = table.loc[valid, "same_identity"]
        same = same[same.notna() & (same.astype(str) != "")].astype(str).str.lower() == "true"
        known = int(same.size)
        rate = float(same.mean()) if known else float("nan")
    return UnderfitResult(
        model=model, csv_path=csv_path, n_images=len(table), n_excluded=int((~valid).sum()),
        mean_gap=float(gaps[valid].mean()) if valid.any() else float("nan"),
        buckets={bucket: int((table["bucket"] == bucket).sum()) for bucket in BUCKETS},
        already_done=already_done, same_identity_rate=rate, n_identity_known=known)


# --- the comparison ----------------------------------------------------------

def _is_test_index(key: str, n_test: int) -> bool:
    """Return True for a decimal index below ``n_test`` written without leading zeros."""
    if not (key.isascii() and key.isdigit()):
        return False
    return key == str(int(key)) and int(key) < n_test


def check_split_keys(train: Embeddings, test: Embeddings, inpaint: Embeddings,
                     train_names: list[str], test_names: list[str], root: str | Path) -> None:
    """Raise ValueError when the embeddings do not belong to this split.

    A test face among the training embeddings would be its own nearest
    training neighbour, so that is rejected as well.
    """
    train_set, test_set = set(train_names), set(test_names)
    leaked = sorted(set(train.keys) & test_set)
    if leaked:
        raise ValueError(f"{len(leaked)} test image(s) appear in the training embeddings "
                         f"{train.path} (e.g. {', '.join(leaked[:5])}); they were computed for "
                         "another split. Recompute them with: "
                         f"{embedding_command(root, 'train')}")
    for embeddings, names, list_name in ((train, train_set, "train"), (test, test_set, "test")):
        foreign = sorted(set(embeddings.keys) - names)
        if foreign:
            raise ValueError(f"{len(foreign)} key(s) of {embeddings.path} are not in the split's "
                             f"{list_name}.txt (e.g. {', '.join(foreign[:5])}); recompute them with: "
                             f"{embedding_command(root, embeddings.source)}")
    not_embedded = len(train_set) - len(train.keys)
    if not_embedded:
        log.warning("%d of %d training image(s) have no embedding in %s and cannot be neighbours",
                    not_embedded, len(train_set), train.path)
    bad = [key for key in inpaint.keys if not _is_test_index(key, len(test_names))]
    if bad:
        raise ValueError(f"{inpaint.path}: key(s) {', '.join(bad[:5])} are not test indices "
                         f"0..{len(test_names) - 1} written without leading zeros; recompute them with: "
                         f"{embedding_command(root, inpaint.source)}")


def compare_to_neighbors(inpaint: Embeddings, test: Embeddings, train: Embeddings,
                         test_names: list[str], k: int, chunk: int) -> pd.DataFrame:
    """Return one row per inpainted test image with d_test, its k nearest training faces and the gap."""
    order = np.argsort([int(key) for key in inpaint.keys], kind="stable")
    idx = np.array([int(key) for key in inpaint.keys])[order]
    gz_vectors = inpaint.vectors[order]
    test_files = [test_names[i] for i in idx]

    test_rows = test.row_of()
    test_vectors = np.full(gz_vectors.shape, np.nan, dtype=np.float32)
    test_face_found = np.zeros(len(idx), dtype=bool)
    missing = []
    for row, name in enumerate(test_files):
        source_row = test_rows.get(name)
        if source_row is None:
            missing.append(f"{idx[row]} ({name})")
            continue
        test_vectors[row] = test.vectors[source_row]
        test_face_found[row] = test.face_found[source_row]
    if missing:
        log.warning("%d inpainted image(s) have no test embedding in %s and are excluded: %s",
                    len(missing), test.path, ", ".join(missing[:20]))

    # Rows are named "<source> idx <i>" in the warnings about zero or NaN vectors.
    row_names = [f"{inpaint.source} idx {i}" for i in idx]
    d_test = cosine_distance(gz_vectors, test_vectors, labels=row_names)
    neighbors, d_train = nearest_neighbors(gz_vectors, train.vectors, k, chunk,
                                           query_keys=row_names, train_keys=train.keys)
    gap = d_test - d_train[:, 0]

    table = pd.DataFrame({"idx": idx, "test_file": test_files, "d_test": d_test})
    for column in range(neighbors.shape[1]):
        found = neighbors[:, column] >= 0
        files = np.where(found, train.keys[np.where(found, neighbors[:, column], 0)], "")
        table[f"train_file_{column + 1}"] = files
        table[f"d_train_{column + 1}"] = d_train[:, column]
    table["gap"] = gap
    table["bucket"] = np.where(np.isnan(gap), EXCLUDED, np.where(gap <= 0, BUCKETS[0], BUCKETS[1]))
    table["gz_face_found"] = inpaint.face_found[order]
    table["test_face_found"] = test_face_found
    no_face = int((~table["gz_face_found"]).sum()) + int((~test_face_found).sum()) - len(missing)
    if no_face:
        # NOTE: rows without a detected face keep whatever vector the embedding
        # stage wrote for them. The face_found columns let readers drop them.
        log.warning("%d G(z) or test embedding(s) were computed without a detected face "
                    "(see the gz_face_found and test_face_found columns)", no_face)
    return table


def add_identity_columns(table: pd.DataFrame, identities: dict[str, str],
                         train_names: list[str]) -> pd.DataFrame:
    """Add the person of each test image and of its nearest training face.

    Columns: ``test_identity``, ``train_identity_1``, ``same_identity``
    (True, False, or empty where either identity is unknown) and
    ``train_images_same_identity``, the number of training images of the
    test image's person. After a person-disjoint split that count is 0.
    """
    per_person: dict[str, int] = {}
    for name in train_names:
        if name in identities:
            per_person[identities[name]] = per_person.get(identities[name], 0) + 1
    test_ids = [identities.get(name, "") for name in table["test_file"]]
    nearest_ids = [identities.get(name, "") for name in table["train_file_1"]]
    same = [("" if not (a and b) else a == b) for a, b in zip(test_ids, nearest_ids)]
    table = table.copy()
    table["test_identity"] = test_ids
    table["train_identity_1"] = nearest_ids
    table["same_identity"] = pd.Series(same, index=table.index, dtype=object)
    table["train_images_same_identity"] = [per_person.get(person, 0) if person else -1
                                           for person in test_ids]
    unknown = sum(1 for person in test_ids if not person)
    if unknown:
        log.warning("%d test image(s) have no entry in the identity file; their same_identity "
                    "is empty and train_images_same_identity is -1", unknown)
    return table


# --- completion files and mosaics ----------------------------------------------

def final_completion_files(image_dir: Path) -> dict:
    """Return the files behind the tiles of one completed image, with None for absent ones.

    The overlay and G(z) come from the same iteration as the final blended
    completion, so all three tiles show one state of the optimization.
    """
    files = {"original": image_dir / "original.jpg", "masked": image_dir / "masked.jpg",
             "blended": None, "overlay": None, "gz": None, "iteration": None}
    blended = final_iteration_file(image_dir / "gen_images")
    if blended is None:
        return files
    iteration = int(blended.stem.split("_")[1])
    files.update(blended=blended, iteration=iteration,
                 overlay=image_dir / "gen_images_overlay" / f"gen_{iteration}.jpg",
                 gz=image_dir / "gz" / f"gz_{iteration}.jpg")
    return files


def check_gz_iterations(inpaint: Embeddings, finals: dict[int, dict], root: str | Path) -> None:
    """Warn when G(z) embeddings were made from another iteration than the final completion."""
    stale = []
    for key, path in zip(inpaint.keys, inpaint.paths):
        match = _GZ_NAME.match(Path(path).name)
        final_iteration = finals.get(int(key), {}).get("iteration")
        if match and final_iteration is not None and int(match.group(1)) != final_iteration:
            stale.append(f"{key} (embedded gz_{match.group(1)}.jpg, final gz_{final_iteration}.jpg)")
    if stale:
        log.warning("%d G(z) embedding(s) in %s come from another iteration than the final "
                    "completion, so they may be stale: %s. Recompute them with: %s",
                    len(stale), inpaint.path, "; ".join(stale[:10]),
                    embedding_command(root, inpaint.source))


def _fit_tile(rgb: np.ndarray) -> np.ndarray:
    if rgb.shape[:2] == (TILE_SIZE, TILE_SIZE):
        return rgb
    return cv2.resize(rgb, (TILE_SIZE, TILE_SIZE), interpolation=cv2.INTER_AREA)


def _read_tile(path: Path | None, loader, problems: list[str]) -> np.ndarray:
    """Load one tile with ``loader``. A missing or unreadable file gives a grey tile."""
    if path is not None:
        try:
            return _fit_tile(loader(path))
        except (FileNotFoundError, UnreadableImage) as exc:
            problems.append(f"{path} ({exc.__class__.__name__})")
    else:
        problems.append("a final completion file (none saved)")
    return np.full((TILE_SIZE, TILE_SIZE, 3), MISSING_TILE_VALUE, dtype=np.uint8)


def write_mosaics(table: pd.DataFrame, finals: dict[int, dict], out_dir: Path, data_dir: Path,
                  prep: Preprocessing, progress: bool = True) -> None:
    """Write ``<bucket>/<idx>.jpg`` for every image that is not excluded.

    One row of tiles: original, masked, blended inpainting, overlay, G(z),
    then the training neighbours from the nearest on. Training faces are
    loaded from ``data_dir`` with the same crop as the test faces.
    """
    neighbor_columns = sorted((c for c in table.columns if c.startswith("train_file_")),
                              key=lambda c: int(c.rsplit("_", 1)[1]))
    problems: list[str] = []
    train_cache: dict[str, np.ndarray] = {}
    rows = table[table["bucket"] != EXCLUDED]
    for row in tqdm(rows.itertuples(index=False), total=len(rows), desc="mosaics", unit="img",
                    disable=not progress):
        files = finals.get(int(row.idx), {})
        tiles = [_read_tile(files.get(name), decode_rgb, problems)
                 for name in ("original", "masked", "blended", "overlay", "gz")]
        for column in neighbor_columns:
            name = getattr(row, column)
            if name not in train_cache:
                train_cache[name] = _read_tile(data_dir / name,
                                               lambda path: load_face(path, prep), problems)
            tiles.append(train_cache[name])
        save_rgb(out_dir / row.bucket / f"{row.idx}.jpg", image_grid(np.stack(tiles), len(tiles)))
    if problems:
        log.warning("%d mosaic tile(s) are grey because their image is missing or unreadable: %s",
                    len(problems), "; ".join(problems[:10]))


# --- earlier results -----------------------------------------------------------

def _prepare_output(out_dir: Path, inputs: dict, overwrite: bool) -> bool:
    """Return True when ``out_dir`` already contains results of exactly ``inputs``.

    Otherwise clear the previous outputs, unless they come from other inputs
    and ``overwrite`` is off, in which case raise FileExistsError.
    """
    record_path, csv_path = out_dir / INPUTS_FILE, out_dir / CSV_FILE
    if record_path.exists():
        earlier = provenance.read_json(record_path)
        # Older records also stored the completions folder's absolute path. The
        # model, clipping and mask determine that folder, and the absolute path
        # would make a moved experiment folder look like other inputs.
        earlier.pop("completions", None)
        if earlier == inputs and csv_path.exists() and not overwrite:
            return True
        differing = provenance.describe_differences(earlier, inputs)
        if differing and not overwrite:
            raise FileExistsError(f"{out_dir} contains results made from other inputs "
                                  f"({'; '.join(differing)}). Pass --overwrite to replace them.")
    elif csv_path.exists() and not overwrite:
        raise FileExistsError(f"{csv_path} exists without {record_path.name}, so its inputs are "
                              "unknown. Pass --overwrite to replace it.")
    # Without a record and a CSV, anything left is a killed run's partial output.
    record_path.unlink(missing_ok=True)
    csv_path.unlink(missing_ok=True)
    for bucket in BUCKETS:
        shutil.rmtree(out_dir / bucket, ignore_errors=True)
    return False


def _preprocessing(layout: Layout) -> Preprocessing:
    """Return the preprocessing of the training data, as complete.py chooses it."""
    manifest = layout.tfrecords / "manifest.json"
    if manifest.exists():
        return Preprocessing(**provenance.read_json(manifest)["preprocessing"])
    return Preprocessing()


def _json_roundtrip(data: dict) -> dict:
    return json.loads(json.dumps(data, sort_keys=True, default=str))


# --- the stage -----------------------------------------------------------------

@dataclass(frozen=True)
class SplitInputs:
    """The inputs that every comparison of one experiment shares: the split, its embeddings and its pixels."""

    train: Embeddings
    test: Embeddings
    train_names: list[str]
    test_names: list[str]
    data_dir: Path
    prep: Preprocessing
    protocol: str


def load_split_inputs(root: str | Path, protocol: str | None) -> SplitInputs:
    """Load the train and test embeddings of ``protocol`` with the split lists they belong to.

    Raises FileNotFoundError for a missing split or embedding file and
    ValueError for embeddings of differing protocols or lengths.
    """
    layout = Layout(root)
    train, test = [load_embeddings(find_embedding_file(layout.embeddings, name, protocol, root), name, root)
                   for name in ("train", "test")]
    shared_protocol = check_same_protocol([train, test])
    check_same_dimension([train, test])
    manifest_path = layout.split_dir / "manifest.json"
    train_names = read_split_list(layout.split_dir, "train")
    test_names = read_split_list(layout.split_dir, "test")
    if not manifest_path.exists():
        raise FileNotFoundError(f"split manifest not found: {manifest_path}. Run split_train_test.py first.")
    data_dir = Path(provenance.read_json(manifest_path)["data_dir"])
    return SplitInputs(train=train, test=test, train_names=train_names, test_names=test_names,
                       data_dir=data_dir, prep=_preprocessing(layout), protocol=shared_protocol)


def measure_source(name: str, source: Embeddings, split: SplitInputs, finals: dict[int, dict],
                   extra_inputs: dict, root: str | Path, k: int, chunk: int,
                   identities: str | None = None, overwrite: bool = False,
                   progress: bool = True) -> UnderfitResult:
    """Compare ``source`` (G(z) or baseline embeddings keyed by test index) with the split.

    Writes ``underfit.csv``, the mosaics and ``inputs.json`` to
    ``<root>/underfit/<name>``, or skips the work when that folder already
    contains results of the same inputs. ``identities`` is an identity file
    that adds the same-person columns (see :func:`add_identity_columns`).
    """
    layout = Layout(root)
    check_same_protocol([split.train, split.test, source])
    check_same_dimension([split.train, split.test, source])
    check_split_keys(split.train, split.test, source, split.train_names, split.test_names, root)

    inputs = _json_roundtrip({
        "model": name, "k": k, "protocol": split.protocol,
        "embeddings": {s.source: {"file": s.path.name, "sha256": provenance.sha256_file(s.path)}
                       for s in (split.train, split.test, source)},
        "train_list_sha256": provenance.sha256_lines(split.train_names),
        "test_list_sha256": provenance.sha256_lines(split.test_names),
        "data_dir": str(split.data_dir), "preprocessing": split.prep.as_dict(),
        **extra_inputs,
    })
    if identities:
        inputs["identity_file_sha256"] = provenance.sha256_file(identities)
    out_dir = layout.underfit(name)
    csv_path = out_dir / CSV_FILE
    if _prepare_output(out_dir, inputs, overwrite):
        log.info("underfit for %s already done with the same inputs in %s; skipping "
                 "(pass --overwrite to redo it)", name, out_dir)
        return _result_from_table(name, csv_path, pd.read_csv(csv_path), already_done=True)

    provenance.record(out_dir, "underfit", {"model": name, "k": k, "chunk": chunk,
                                            "identities": identities, "inputs": inputs})
    log.info("%s: %d image(s), %d training embedding(s), protocol %s",
             name, len(source.keys), len(split.train.keys), split.protocol)
    table = compare_to_neighbors(source, split.test, split.train, split.test_names, k, chunk)
    if identities:
        table = add_identity_columns(table, read_identities(identities), split.train_names)
    write_mosaics(table, finals, out_dir, split.data_dir, split.prep, progress)
    provenance.write_text_atomic(csv_path, table.to_csv(index=False))
    provenance.write_json_atomic(out_dir / INPUTS_FILE, inputs)

    result = _result_from_table(name, csv_path, table, already_done=False)
    if result.n_excluded == result.n_images:
        log.warning("%s: every image is excluded, so there is no mean gap", name)
    log.info("%s: mean gap %.4f over %d image(s) (%s) -> %s", name, result.mean_gap,
             result.n_images - result.n_excluded,
             ", ".join(f"{bucket} {count}" for bucket, count in result.buckets.items()), csv_path)
    return result


def run_underfit(config: UnderfitConfig) -> UnderfitResult:
    """Compare one model's G(z) embeddings with the test and training embeddings.

    Skips the work when ``<root>/underfit/<model>`` already contains results of
    the same inputs. Raises FileNotFoundError for missing inputs (naming the
    command that makes them) and ValueError for inconsistent ones.
    """
    layout = Layout(config.root)
    split = load_split_inputs(config.root, config.protocol)
    source = INPAINT_PREFIX + config.model
    inpaint = load_embeddings(find_embedding_file(layout.embeddings, source, config.protocol, config.root),
                              source, config.root)

    completions = layout.completions(config.model, config.clipping, config.mask)
    if not completions.is_dir():
        raise FileNotFoundError(f"completions not found: {completions}. Run complete.py --model "
                                f"{config.model} --clipping {config.clipping} --maskType {config.mask} first.")
    check_split_keys(split.train, split.test, inpaint, split.train_names, split.test_names, config.root)
    finals = {int(key): final_completion_files(completions / key) for key in inpaint.keys}
    check_gz_iterations(inpaint, finals, config.root)

    extra_inputs = {
        "clipping": config.clipping, "mask": config.mask,
        "final_files_sha256": provenance.sha256_lines(
            f"{idx}:{files['blended'].name if files['blended'] else ''}"
            for idx, files in sorted(finals.items())),
    }
    return measure_source(config.model, inpaint, split, finals, extra_inputs, config.root,
                          config.k, config.chunk, identities=config.identities,
                          overwrite=config.overwrite, progress=config.progress)
