"""Reference inpainters: pixel-space search, composed images and their gaps on a tiny root.

A deterministic fake embedding backend replaces dlib, so the gaps of the
baselines can be checked against values computed here independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facenet import backends
from facenet.backends import EmbeddingBackend, get_backend
from facenet.distance import cosine_distance_matrix
from facenet.inputs import FaceLoader
from facenet.store import ImageItem, embed_images, embedding_file, load_embeddings
from study.baselines import (BASELINES, BaselineConfig, Baseline, compose, find_mask,
                             nearest_by_pixels, run_baselines)
from study.images import Preprocessing, decode_rgb, save_rgb
from study.layout import Layout
from study.masks import make_mask

SIZE = 64
PREP = Preprocessing(size=SIZE, crop_fraction=1.0)   # 64 px files pass load_face unchanged


class BlockMeanBackend(EmbeddingBackend):
    """Deterministic 48-D embedding: the mean of each channel over a 4 x 4 grid of blocks."""

    name = "test-block-means"
    dim = 48

    def _embed_valid(self, images):
        side = self.image_size // 4
        vectors = [image.astype(np.float64).reshape(4, side, 4, side, 3).mean(axis=(1, 3)).ravel()
                   for image in images]
        return np.array(vectors), [True] * len(images)


class OtherProtocolBackend(BlockMeanBackend):
    name = "test-other-protocol"

    def protocol_name(self) -> str:
        return "test-other"


@pytest.fixture(autouse=True)
def fake_backends(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, BlockMeanBackend.name, BlockMeanBackend)
    monkeypatch.setitem(backends.BACKENDS, OtherProtocolBackend.name, OtherProtocolBackend)


def smooth(seed: int) -> np.ndarray:
    from conftest import synthetic_rgb

    return synthetic_rgb(seed, SIZE, SIZE)


def hidden_region() -> np.ndarray:
    return make_mask("center", SIZE) < 0.5


TRAIN = [f"t{i:02d}.png" for i in range(10)]
TEST = ["a.png", "b.png", "c.png"]
# Training image whose known pixels equal those of test image 0 but whose hole differs.
PLANTED = "t07.png"


def make_test_faces() -> dict[str, np.ndarray]:
    return {name: smooth(200 + i) for i, name in enumerate(TEST)}


def train_faces() -> dict[str, np.ndarray]:
    faces = {name: smooth(100 + i) for i, name in enumerate(TRAIN)}
    planted = make_test_faces()["a.png"].copy()
    planted[hidden_region()] = smooth(999)[hidden_region()]
    faces[PLANTED] = planted
    return faces


@pytest.fixture
def root(tmp_path) -> Path:
    """A root with a split, PNG faces and train/test embeddings of the fake backend."""
    root, data = tmp_path / "root", tmp_path / "data"
    for name, face in train_faces().items():
        save_rgb(data / name, face)
    layout = Layout(root)
    for name, face in make_test_faces().items():
        save_rgb(layout.test_images / name, face)
    (layout.split_dir / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (layout.split_dir / "test.txt").write_text("\n".join(TEST) + "\n")
    (layout.split_dir / "manifest.json").write_text(json.dumps({"data_dir": str(data)}))
    layout.tfrecords.mkdir(parents=True)
    (layout.tfrecords / "manifest.json").write_text(json.dumps({"preprocessing": PREP.as_dict()}))

    backend = get_backend(BlockMeanBackend.name, preprocessing=PREP)
    loader = FaceLoader(PREP)
    for source, folder, names in (("train", data, TRAIN), ("test", layout.test_images, TEST)):
        items = [ImageItem(key=name, path=folder / name) for name in names]
        embed_images(items, backend, loader, embedding_file(layout.embeddings, source, backend.protocol_name()),
                     source, loader.describe(), progress=False)
    return root


def run(root: Path, **overrides):
    options = {"root": str(root), "k": 3, "embedder": BlockMeanBackend.name, "pixel_chunk": 4,
               "workers": 1, "progress": False, **overrides}
    return run_baselines(BaselineConfig(**options))


def read_underfit(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "underfit" / f"baseline_{name}" / "underfit.csv").set_index("idx")


def protocol() -> str:
    return get_backend(BlockMeanBackend.name, preprocessing=PREP).protocol_name()


def embeddings_of(root: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    data = load_embeddings(embedding_file(Layout(root).embeddings, source, protocol()))
    return data.keys, data.embeddings


# --- the pixel-space search ----------------------------------------------------------------

def brute_force_pixels(queries, train, compared):
    difference = queries[:, None].astype(np.int64) - train[None].astype(np.int64)
    sse = (difference ** 2 * compared[None, None, :, :, None]).sum(axis=(2, 3, 4))
    return np.argmin(sse, axis=1), sse.min(axis=1)


@pytest.mark.parametrize("batch", [1, 3, 7, 20])
def test_pixel_search_matches_brute_force(batch):
    rng = np.random.default_rng(batch)
    queries = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    train = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    compared = rng.random((8, 8)) < 0.6
    batches = ((start, train[start:start + batch], np.ones(len(train[start:start + batch]), bool))
               for start in range(0, len(train), batch))

    indices, sse = nearest_by_pixels(queries, batches, compared)
    expected_indices, expected_sse = brute_force_pixels(queries, train, compared)

    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(sse, expected_sse)


def test_pixel_search_ties_and_unreadable():
    query = np.full((1, 4, 4, 3), 10, dtype=np.uint8)
    train = np.stack([np.full((4, 4, 3), value, dtype=np.uint8) for value in (50, 12, 8, 12, 10)])
    readable = np.array([True, True, True, True, False])   # the exact match is unreadable
    compared = np.ones((4, 4), dtype=bool)

    for batch in (1, 2, 5):
        batches = ((start, train[start:start + batch], readable[start:start + batch])
                   for start in range(0, 5, batch))
        indices, sse = nearest_by_pixels(query, batches, compared)
        # Rows 1, 2 and 3 are all 2 grey levels away; the lowest index wins.
        assert indices[0] == 1, f"batch {batch}"
        assert sse[0] == 4 * 16 * 3


def test_pixel_search_without_readable_image():
    batches = [(0, np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, bool))]

    indices, sse = nearest_by_pixels(np.zeros((1, 4, 4, 3), np.uint8), batches, np.ones((4, 4), bool))

    assert indices[0] == -1
    assert np.isinf(sse[0])


def test_compose_weights_in_hole_only():
    known = make_mask("center", 8)
    hidden = known < 0.5
    test = np.full((8, 8, 3), 100, dtype=np.uint8)
    train = np.full((8, 8, 3), 201, dtype=np.uint8)

    half = compose(test, train, known, Baseline("mix50", "", "", 0.5))
    copy = compose(test, train, known, Baseline("copy", "", "", 1.0))
    whole = compose(test, train, known, Baseline("train", "", "", 1.0, whole_image=True))

    assert (half[hidden] == 150).all()           # rint(150.5) rounds to even
    assert (half[~hidden] == 100).all()
    assert (copy[hidden] == 201).all()
    assert (copy[~hidden] == 100).all()
    np.testing.assert_array_equal(whole, train)


# --- the stage on a tiny root ----------------------------------------------------------------

def test_generalizing_gap_is_minus_nearest_distance(root):
    run(root)
    table = read_underfit(root, "test")
    _, train_vectors = embeddings_of(root, "train")
    test_keys, test_vectors = embeddings_of(root, "test")
    nearest = cosine_distance_matrix(test_vectors, train_vectors).min(axis=1)
    expected = dict(zip(test_keys, nearest))

    for idx, name in enumerate(TEST):
        assert table.loc[idx, "d_test"] == 0.0
        assert table.loc[idx, "gap"] == pytest.approx(-expected[name], abs=1e-12)
        assert table.loc[idx, "bucket"] == "generalized"


def test_overfitting_copies_pixel_neighbour(root):
    run(root)
    nearest = pd.read_csv(root / "baselines" / "nearest_pixels.csv").set_index("idx")
    faces, trains = make_test_faces(), train_faces()
    hidden = hidden_region()
    known = ~hidden
    train_stack = np.stack([trains[name] for name in TRAIN])

    assert nearest.loc[0, "train_file"] == PLANTED
    assert nearest.loc[0, "pixel_sse"] == 0
    for idx, name in enumerate(TEST):
        expected_row, expected_sse = brute_force_pixels(faces[name][None], train_stack, known)
        assert nearest.loc[idx, "train_file"] == TRAIN[expected_row[0]]
        assert nearest.loc[idx, "pixel_sse"] == expected_sse[0]

        copied = decode_rgb(root / "baselines" / "copy" / f"{idx}.png")
        source = trains[nearest.loc[idx, "train_file"]]
        np.testing.assert_array_equal(copied[hidden], source[hidden])
        np.testing.assert_array_equal(copied[known], faces[name][known])
        # Searching the copied image's known pixels again finds the same training image.
        again, _ = brute_force_pixels(copied[None], train_stack, known)
        assert TRAIN[again[0]] == nearest.loc[idx, "train_file"]


def test_partial_copies_mix_hole(root):
    run(root)
    nearest = pd.read_csv(root / "baselines" / "nearest_pixels.csv").set_index("idx")
    hidden = hidden_region()
    trains = train_faces()

    for weight, name in ((0.25, "mix25"), (0.5, "mix50"), (0.75, "mix75")):
        for idx, test_name in enumerate(TEST):
            image = decode_rgb(root / "baselines" / name / f"{idx}.png").astype(np.float64)
            test = make_test_faces()[test_name].astype(np.float64)
            train = trains[nearest.loc[idx, "train_file"]].astype(np.float64)
            expected = np.rint(weight * train + (1 - weight) * test)
            np.testing.assert_array_equal(image[hidden], expected[hidden])
            np.testing.assert_array_equal(image[~hidden], test[~hidden])


def test_whole_train_baseline_is_own_neighbour(root):
    run(root)
    table = read_underfit(root, "train")
    nearest = pd.read_csv(root / "baselines" / "nearest_pixels.csv").set_index("idx")

    for idx in range(len(TEST)):
        assert table.loc[idx, "train_file_1"] == nearest.loc[idx, "train_file"]
        assert table.loc[idx, "d_train_1"] == 0.0
        assert table.loc[idx, "gap"] == table.loc[idx, "d_test"]


def test_baselines_write_all_outputs(root):
    results = run(root)

    assert [result.model for result in results] == [baseline.source for baseline in BASELINES]
    for baseline in BASELINES:
        out = root / "underfit" / baseline.source
        assert (out / "underfit.csv").is_file()
        assert (out / "inputs.json").is_file()
        mosaics = list(out.glob("*/[0-9]*.jpg"))
        assert len(mosaics) == len(TEST), baseline.name
        assert embedding_file(Layout(root).embeddings, baseline.source, protocol()).is_file()


def test_baselines_rerun_skips(root):
    run(root)
    csv = root / "baselines" / "nearest_pixels.csv"
    before = csv.stat().st_mtime_ns

    again = run(root)

    assert all(result.already_done for result in again)
    assert csv.stat().st_mtime_ns == before


def test_baselines_use_completion_mask(root):
    known = np.ones((SIZE, SIZE), np.float32)
    known[:, : SIZE // 2] = 0.0    # the left half hidden
    mask_png = root / "completions_stochastic_center" / "dcgan" / "test" / "mask.png"
    save_rgb(mask_png, np.repeat((known * 255).astype(np.uint8)[:, :, None], 3, axis=2))

    found, source = find_mask(Layout(root), "stochastic", "center", SIZE)
    run(root)

    np.testing.assert_array_equal(found, known)
    assert source == str(mask_png)
    nearest = pd.read_csv(root / "baselines" / "nearest_pixels.csv").set_index("idx")
    copied = decode_rgb(root / "baselines" / "copy" / "1.png")
    train = train_faces()[nearest.loc[1, "train_file"]]
    np.testing.assert_array_equal(copied[:, : SIZE // 2], train[:, : SIZE // 2])
    np.testing.assert_array_equal(copied[:, SIZE // 2:], make_test_faces()["b.png"][:, SIZE // 2:])


def test_baselines_differing_masks_raise(root):
    for model, hidden_columns in (("dcgan", 16), ("wgan-gp", 20)):
        known = np.ones((SIZE, SIZE), np.uint8) * 255
        known[:, :hidden_columns] = 0
        save_rgb(root / "completions_stochastic_center" / model / "test" / "mask.png",
                 np.repeat(known[:, :, None], 3, axis=2))

    with pytest.raises(ValueError, match="differ"):
        run(root)


def test_baselines_reject_other_protocol(root):
    with pytest.raises(ValueError) as error:
        run(root, embedder=OtherProtocolBackend.name)

    assert "'test-other'" in str(error.value)
    assert repr(protocol()) in str(error.value)


def test_baselines_full_match_option(root):
    run(root, match="full")
    nearest = pd.read_csv(root / "baselines" / "nearest_pixels.csv").set_index("idx")
    train_stack = np.stack([train_faces()[name] for name in TRAIN])
    faces = make_test_faces()

    for idx, name in enumerate(TEST):
        expected, _ = brute_force_pixels(faces[name][None], train_stack, np.ones((SIZE, SIZE), bool))
        assert nearest.loc[idx, "train_file"] == TRAIN[expected[0]]


def test_baselines_other_settings_need_overwrite(root):
    run(root)
    image = root / "baselines" / "copy" / "0.png"
    before = image.read_bytes()

    with pytest.raises(FileExistsError, match="--overwrite"):
        run(root, match="full")

    assert image.read_bytes() == before
    results = run(root, match="full", overwrite=True)
    assert not any(result.already_done for result in results)
