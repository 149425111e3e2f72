"""Train/test split written as file lists, and the image database for comparison.

The dataset folder is only read: the split is a pair of lists plus a manifest,
and the test images are copied (never moved) into the test folder.
"""

from __future__ import annotations

import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study.images import UnreadableImage, decode_rgb, list_image_files
from study.provenance import read_json, sha256_file, sha256_lines, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


class SplitError(ValueError):
    """Invalid split request or a conflicting earlier split."""


class ImageDatabaseConflict(SplitError):
    """Database images that differ from the completions they would be copied from."""


def _decodes(path: Path) -> bool:
    try:
        decode_rgb(path)
        return True
    except UnreadableImage:
        return False


def find_readable_images(folder: Path, workers: int = 4, progress: bool = True):
    """Return ``(readable, skipped)`` file paths; skipped files do not decode as images."""
    candidates, others = list_image_files(folder)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        flags = list(tqdm(pool.map(_decodes, candidates), total=len(candidates),
                          desc="checking images", unit="img", disable=not progress))
    readable = [path for path, ok in zip(candidates, flags) if ok]
    skipped = others + [path for path, ok in zip(candidates, flags) if not ok]
    return readable, sorted(skipped)


@dataclass
class SplitResult:
    train: list[str]
    test: list[str]
    skipped: list[str]
    manifest: dict
    reused: bool


def _check_test_size(names: list[str], n_test: int) -> None:
    """Raise SplitError unless ``n_test`` leaves at least one of ``names`` for training."""
    if n_test < 1:
        raise SplitError(f"--n_test must be at least 1, got {n_test}")
    if n_test >= len(names):
        raise SplitError(
            f"--n_test {n_test} must be smaller than the number of readable images "
            f"({len(names)}); lower --n_test or add images")


def choose_test_set(names: list[str], n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Pick ``n_test`` of ``names`` at random with ``seed``; return sorted (train, test)."""
    _check_test_size(names, n_test)
    order = np.random.default_rng(seed).permutation(len(names))
    ordered = sorted(names)
    test = sorted(ordered[i] for i in order[:n_test])
    chosen = set(test)
    train = [name for name in ordered if name not in chosen]
    return train, test


def read_identities(path: str | Path) -> dict[str, str]:
    """Read an identity file such as CelebA's ``identity_CelebA.txt``: file name to person id.

    Each non-blank line is ``<file name> <identity>``, for example
    ``000001.jpg 2880``. Raises ValueError naming the line of a malformed
    entry or of a file listed twice with different identities.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity file not found: {path}. For CelebA it is "
                                "identity_CelebA.txt from the dataset's Anno folder.")
    identities: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}, line {number}: expected '<file name> <identity>', "
                                 f"got {line.strip()!r}")
            name, identity = fields
            if identities.get(name, identity) != identity:
                raise ValueError(f"{path}, line {number}: {name} is listed with identity "
                                 f"{identity} but earlier with {identities[name]}")
            identities[name] = identity
    if not identities:
        raise ValueError(f"{path} contains no '<file name> <identity>' lines")
    return identities


def choose_test_identities(names: list[str], n_test: int, seed: int,
                           identities: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Pick whole persons at random until their images make exactly ``n_test`` test images.

    Returns sorted ``(train, test, test_identities)``. Every image of a chosen
    person that is among ``names`` goes to the test set, so no person has
    images on both sides. Persons are visited in an order drawn with
    ``seed``, and each one is taken when its images fit into the free slots
    and the persons after it can still fill the rest exactly. A person who
    does not fit is skipped, so near the end the draw favours persons with
    few images. Raises SplitError when an image has no identity or when no
    set of whole persons has exactly ``n_test`` images.
    """
    _check_test_size(names, n_test)
    unknown = sorted(name for name in names if name not in identities)
    if unknown:
        raise SplitError(f"{len(unknown)} of {len(names)} image(s) have no entry in the identity "
                         f"file (e.g. {', '.join(unknown[:10])}), so a person-disjoint split "
                         "cannot be checked; use the identity file of this dataset")

    images_of: dict[str, list[str]] = {}
    for name in sorted(names):
        images_of.setdefault(identities[name], []).append(name)
    persons = sorted(images_of)
    order = [persons[position] for position in np.random.default_rng(seed).permutation(len(persons))]
    counts = [len(images_of[person]) for person in order]

    # Bit s of reachable[i] is set when some of the persons order[i:] have
    # exactly s images together (subset sums as bit sets, up to n_test).
    limit = (1 << (n_test + 1)) - 1
    reachable = [0] * (len(order) + 1)
    reachable[-1] = 1
    for i in range(len(order) - 1, -1, -1):
        reachable[i] = (reachable[i + 1] | (reachable[i + 1] << counts[i])) & limit
    if not (reachable[0] >> n_test) & 1:
        raise SplitError(f"no set of whole persons has exactly {n_test} images; choose another "
                         "--n_test")

    chosen: list[str] = []
    free = n_test
    for i, (person, count) in enumerate(zip(order, counts)):
        if free == 0:
            break
        if count <= free and (reachable[i + 1] >> (free - count)) & 1:
            chosen.append(person)
            free -= count

    test = sorted(name for person in chosen for name in images_of[person])
    test_set = set(test)
    train = [name for name in sorted(names) if name not in test_set]
    return train, test, sorted(chosen)


def split_dataset(data_dir: str | Path, split_dir: str | Path, test_dir: str | Path,
                  n_test: int, seed: int, overwrite: bool = False,
                  progress: bool = True, identity_file: str | Path | None = None) -> SplitResult:
    """Write ``train.txt``, ``test.txt`` and ``manifest.json`` and copy the test images.

    With ``identity_file`` the test set consists of whole persons (see
    :func:`choose_test_identities`) and the manifest lists their identities.
    Rerunning with the same data, seed, size and identity file reuses the
    existing split and copies any test image that is missing. Different
    settings raise SplitError unless ``overwrite`` is set.
    """
    data_dir, split_dir, test_dir = Path(data_dir), Path(split_dir), Path(test_dir)
    data_real, split_real = data_dir.resolve(), split_dir.resolve()
    if split_real.is_relative_to(data_real) or data_real.is_relative_to(split_real):
        # The split writes lists and copies test images. Inside the data folder
        # they would change the data set that the split is drawn from.
        raise SplitError(f"the split folder {split_dir} and the data folder {data_dir} overlap; "
                         "choose an experiment --root outside the data folder (the data folder "
                         "is only read)")
    manifest_path = split_dir / "manifest.json"
    identities = read_identities(identity_file) if identity_file is not None else None
    identity_sha256 = sha256_file(identity_file) if identity_file is not None else None
    if manifest_path.exists() and not overwrite:
        old = read_json(manifest_path)
        wanted = {"data_dir": str(data_dir.resolve()), "seed": seed, "n_test": n_test,
                  "identity_file_sha256": identity_sha256}
        differing = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
        if differing:
            details = "; ".join(f"{k}: existing {a!r}, requested {b!r}" for k, (a, b) in differing.items())
            raise SplitError(f"a different split already exists in {split_dir} ({details}). "
                             "Pass --overwrite to replace it, or choose another --root.")
        train = (split_dir / "train.txt").read_text().split()
        test = (split_dir / "test.txt").read_text().split()
        _copy_test_images(data_dir, test_dir, test)
        log.info("split already exists in %s (%d train, %d test); reusing it",
                 split_dir, len(train), len(test))
        return SplitResult(train, test, old.get("skipped", []), old, reused=True)

    readable, skipped = find_readable_images(data_dir, progress=progress)
    if not readable:
        raise SplitError(f"no readable images in {data_dir}; check the --data folder")
    if skipped:
        log.warning("%d file(s) in %s are not readable images and are left out: %s",
                    len(skipped), data_dir, ", ".join(p.name for p in skipped))
    names = [p.name for p in readable]
    manifest = {
        "data_dir": str(data_dir.resolve()),
        "seed": seed,
        "n_test": n_test,
        "split_by": "image" if identities is None else "identity",
        "identity_file": None if identity_file is None else str(Path(identity_file).resolve()),
        "identity_file_sha256": identity_sha256,
    }
    if identities is None:
        train, test = choose_test_set(names, n_test, seed)
    else:
        train, test, test_identities = choose_test_identities(names, n_test, seed, identities)
        manifest.update(test_identities=test_identities, n_test_identities=len(test_identities),
                        n_train_identities=len({identities[name] for name in train}))
    manifest.update({
        "n_train": len(train),
        "n_readable": len(readable),
        "skipped": [p.name for p in skipped],
        "train_sha256": sha256_lines(train),
        "test_sha256": sha256_lines(test),
    })
    if overwrite and test_dir.exists():
        shutil.rmtree(test_dir)
    write_text_atomic(split_dir / "train.txt", "\n".join(train) + "\n")
    write_text_atomic(split_dir / "test.txt", "\n".join(test) + "\n")
    _copy_test_images(data_dir, test_dir, test)
    write_json_atomic(manifest_path, manifest)
    log.info("split %d readable images: %d train, %d test (seed %d) -> %s",
             len(readable), len(train), len(test), seed, split_dir)
    if identities is not None:
        log.info("the test images belong to %d person(s) with no image in the train set; "
                 "the train images belong to %d other person(s)",
                 manifest["n_test_identities"], manifest["n_train_identities"])
    return SplitResult(train, test, manifest["skipped"], manifest, reused=False)


def _copy_test_images(data_dir: Path, test_dir: Path, names: list[str]) -> None:
    test_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = test_dir / name
        if target.exists():
            continue
        tmp = test_dir / f".{name}.tmp"
        shutil.copyfile(data_dir / name, tmp)
        tmp.replace(target)


def read_split_list(split_dir: str | Path, which: str) -> list[str]:
    """Return the file names of the ``train`` or ``test`` list of a split."""
    path = Path(split_dir) / f"{which}.txt"
    if not path.exists():
        raise FileNotFoundError(f"split list not found: {path}. Run split_train_test.py first.")
    return path.read_text().split()


def final_iteration_file(folder: Path, prefix: str = "gen") -> Path | None:
    """Return ``<prefix>_<i>.jpg`` with the largest ``i`` in ``folder``, or None.

    ``prefix`` is ``gen`` for blended completions and ``gz`` for G(z) itself.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.jpg$")
    best, best_iter = None, -1
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if match and int(match.group(1)) > best_iter:
            best, best_iter = entry, int(match.group(1))
    return best


def build_image_database(completions_root: str | Path, db_dir: str | Path,
                         dataset: str = "test", overwrite: bool = False) -> dict:
    """Build ``imagesdb/<idx>/original.jpg``, ``masked.jpg`` and ``gen/<model>.jpg``.

    ``completions_root`` is a ``completions_<clipping>_<mask>`` folder; every
    model folder under it with a ``<dataset>`` subfolder contributes. The
    generated image is the final blended completion of each image (the
    largest saved iteration). Returns counts per model.

    Raises ImageDatabaseConflict, before writing anything, when existing
    database files differ from the completions (a model was retrained or
    inpainted again) unless ``overwrite``: the embedding stages would
    otherwise measure the old images.
    """
    completions_root, db_dir = Path(completions_root), Path(db_dir)
    models = sorted(p.name for p in completions_root.iterdir()
                    if (p / dataset).is_dir()) if completions_root.is_dir() else []
    if not models:
        raise FileNotFoundError(
            f"no completions found under {completions_root}/<model>/{dataset}. "
            "Run complete.py for at least one model first.")
    counts: dict = {}
    # Every model's completions carry the same original and masked image, so
    # several sources may name one destination. They must agree.
    sources: dict[Path, list[tuple[str, Path]]] = {}
    for model in models:
        counts[model] = 0
        for image_dir in sorted((completions_root / model / dataset).iterdir(),
                                key=lambda p: (len(p.name), p.name)):
            if not image_dir.is_dir() or not image_dir.name.isdigit():
                continue
            final = final_iteration_file(image_dir / "gen_images")
            if final is None:
                log.warning("%s has no blended completion yet; skipped", image_dir)
                continue
            target = db_dir / image_dir.name
            for source, dest in ((image_dir / "original.jpg", target / "original.jpg"),
                                 (image_dir / "masked.jpg", target / "masked.jpg"),
                                 (final, target / "gen" / f"{model}.jpg")):
                sources.setdefault(dest, []).append((model, source))
            counts[model] += 1
    for dest, named in sources.items():
        first_model, first = named[0]
        expected = first.read_bytes()
        for model, source in named[1:]:
            if source.read_bytes() != expected:
                raise ImageDatabaseConflict(
                    f"the completions of {first_model} and {model} contain different copies of "
                    f"{dest.name} for test image {dest.parent.name} ({first} and {source}), so "
                    "they were made from different splits. Inpaint every model again on the "
                    "current split (complete.py --overwrite).")
    # Missing files are written, identical ones left alone, differing ones are conflicts.
    pending, conflicts = [], []
    for dest, named in sources.items():
        source = named[0][1]
        if not dest.exists():
            pending.append((source, dest))
        elif dest.read_bytes() != source.read_bytes():
            pending.append((source, dest))
            conflicts.append(dest)
    if conflicts and not overwrite:
        changed = sorted({dest.stem for dest in conflicts if dest.parent.name == "gen"})
        selection = completions_root.name.removeprefix("completions_").split("_", 1)
        options = (f" --clipping {selection[0]} --maskType {selection[1]}"
                   if len(selection) == 2 else "")
        raise ImageDatabaseConflict(
            f"{len(conflicts)} file(s) in {db_dir} differ from the completions in "
            f"{completions_root}, e.g. {conflicts[0]}"
            + (f"; models with new inpaintings: {', '.join(changed)}" if changed else "")
            + ". Nothing was written. If the completions are the ones to keep (for example "
              f"after retraining a model), run 'split_train_test.py --db --root <root>{options} "
              "--overwrite' and then rerun the later stages.")
    for source, dest in pending:
        _copy(source, dest)
    counts["replaced"] = len(conflicts)
    write_json_atomic(db_dir / "database.json",
                      {"completions": str(completions_root.resolve()), "dataset": dataset,
                       "models": models, "counts": counts})
    return counts


def _copy(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` through a temporary file, so a killed copy leaves no half file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(dest)
    return 0
