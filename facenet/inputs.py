"""The images each embedding source covers, found through the experiment layout."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet.store import ImageItem
from study.images import Preprocessing, decode_rgb, load_face
from study.layout import Layout
from study.provenance import read_json
from study.split import final_iteration_file, read_split_list

log = logging.getLogger(__name__)


def read_preprocessing(layout: Layout) -> Preprocessing:
    """Return the preprocessing saved with the TFRecords, or the default one when there are none."""
    manifest = layout.tfrecords / "manifest.json"
    if not manifest.is_file():
        log.info("no %s; using the default preprocessing %s", manifest, Preprocessing().as_dict())
        return Preprocessing()
    settings = read_json(manifest).get("preprocessing")
    if not isinstance(settings, dict):
        raise ValueError(f"{manifest} has no 'preprocessing' entry; rerun convert.py")
    return Preprocessing(**settings)


@dataclass(frozen=True)
class FaceLoader:
    """Read a dataset image through load_face: the crop and resize used for training."""

    prep: Preprocessing

    def __call__(self, path: Path) -> np.ndarray:
        return load_face(path, self.prep)

    def describe(self) -> str:
        return json.dumps({"loader": "load_face", **self.prep.as_dict()}, sort_keys=True)


@dataclass(frozen=True)
class FullResolutionLoader:
    """Decode a dataset image whole, without the training crop and resize.

    Only for ``--train_full_resolution``, which reproduces the study's
    setting of full-resolution training embeddings.
    """

    def __call__(self, path: Path) -> np.ndarray:
        return decode_rgb(path)

    def describe(self) -> str:
        return json.dumps({"loader": "decode_rgb", "size": "full"}, sort_keys=True)


@dataclass(frozen=True)
class ExactSizeLoader:
    """Decode an image that is already preprocessed (G(z), database images) without cropping.

    Raises ValueError naming the file when it is not ``size`` pixels square,
    because its embedding would not match the protocol's input size.
    """

    size: int

    def __call__(self, path: Path) -> np.ndarray:
        rgb = decode_rgb(path)
        if rgb.shape[:2] != (self.size, self.size):
            raise ValueError(
                f"{path} is {rgb.shape[1]}x{rgb.shape[0]} pixels, expected {self.size}x{self.size} "
                "(the preprocessing size of this experiment's TFRecords)")
        return rgb

    def describe(self) -> str:
        return json.dumps({"loader": "decode_rgb", "size": self.size}, sort_keys=True)


def split_items(layout: Layout, which: str) -> list[ImageItem]:
    """Return the ``train`` or ``test`` images of the split, keyed by file name.

    Train images are read from the dataset folder named in the split
    manifest, test images from their copies in the split's test folder.
    """
    names = read_split_list(layout.split_dir, which)
    if which == "test":
        folder = layout.test_images
    elif which == "train":
        manifest = layout.split_dir / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"split manifest not found: {manifest}. Run split_train_test.py first.")
        folder = Path(read_json(manifest)["data_dir"])
    else:
        raise ValueError(f"invalid split list {which!r}; expected 'train' or 'test'")
    return [ImageItem(key=name, path=folder / name) for name in names]


def inpaint_models(layout: Layout, clipping: str, mask: str) -> list[str]:
    """Return the sorted model names that have a completions folder for the test set."""
    root = layout.completions("_", clipping, mask).parent.parent
    models = sorted(entry.name for entry in root.iterdir()
                    if (entry / "test").is_dir()) if root.is_dir() else []
    if not models:
        raise FileNotFoundError(f"no completions found under {root}/<model>/test. "
                                "Run complete.py for at least one model first.")
    return models


def inpaint_items(layout: Layout, model: str, clipping: str, mask: str) -> list[ImageItem]:
    """Return the final G(z) image of every test image of ``model``, keyed by test index."""
    folder = layout.completions(model, clipping, mask)
    if not folder.is_dir():
        raise FileNotFoundError(f"completions folder not found: {folder}. Run complete.py "
                                f"for model {model!r} with --clipping {clipping} --maskType {mask}.")
    image_dirs = sorted((entry for entry in folder.iterdir()
                         if entry.is_dir() and entry.name.isdigit()), key=lambda p: int(p.name))
    items, unfinished = [], []
    for image_dir in image_dirs:
        final = final_iteration_file(image_dir / "gz", prefix="gz")
        if final is None:
            unfinished.append(image_dir.name)
            continue
        items.append(ImageItem(key=image_dir.name, path=final))
    if unfinished:
        log.warning("%d test image(s) of %s have no G(z) image yet and are skipped: %s",
                    len(unfinished), model, ", ".join(unfinished[:20]))
    if not items:
        raise FileNotFoundError(f"no G(z) images (<idx>/gz/gz_<i>.jpg) under {folder}. "
                                "Run complete.py first.")
    return items


@dataclass
class ImageDatabase:
    """Originals and generated images of the image database, keyed by test index."""

    originals: list[ImageItem]
    generated: dict[str, list[ImageItem]]

    @property
    def models(self) -> list[str]:
        return sorted(self.generated)


def read_image_database(db_dir: str | Path) -> ImageDatabase:
    """List ``<idx>/original.jpg`` and ``<idx>/gen/<model>.jpg`` under ``db_dir``.

    Model names are the file names under ``gen/``. The model list in
    ``database.json``, when present, is only compared with them, and a
    difference is logged as a warning.
    """
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise FileNotFoundError(f"image database not found: {db_dir}. "
                                "Run split_train_test.py --db first.")
    image_dirs = sorted((entry for entry in db_dir.iterdir()
                         if entry.is_dir() and entry.name.isdigit()), key=lambda p: int(p.name))
    originals: list[ImageItem] = []
    generated: dict[str, list[ImageItem]] = {}
    for image_dir in image_dirs:
        original = image_dir / "original.jpg"
        if original.is_file():
            originals.append(ImageItem(key=image_dir.name, path=original))
        gen_dir = image_dir / "gen"
        if not gen_dir.is_dir():
            continue
        for gen_file in sorted(gen_dir.glob("*.jpg")):
            generated.setdefault(gen_file.stem, []).append(ImageItem(key=image_dir.name, path=gen_file))
    if not originals or not generated:
        raise FileNotFoundError(f"no <idx>/original.jpg with <idx>/gen/<model>.jpg under {db_dir}. "
                                "Run split_train_test.py --db after complete.py.")
    database = ImageDatabase(originals, generated)
    listed = db_dir / "database.json"
    if listed.is_file():
        listed_models = sorted(read_json(listed).get("models", []))
        if listed_models != database.models:
            log.warning("%s lists models %s but the folders contain %s; using the folders",
                        listed, listed_models, database.models)
    return database
