"""Tests of the face-embedding package: backends, store, distances and both scripts."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facenet import backends, gans_compare
from facenet.backends import EmbeddingBackend, get_backend
from facenet.distance import cosine_distance, cosine_distance_matrix
from facenet.inputs import ExactSizeLoader, inpaint_items, split_items
from facenet.store import (EmbeddingSet, ImageItem, embed_images, embedding_file, load_embeddings,
                           require_same_protocol, save_embeddings)
from study.images import Preprocessing, decode_rgb, load_face
from study.layout import Layout
from study.split import final_iteration_file

REPO = Path(__file__).resolve().parent.parent


class MeanColourBackend(EmbeddingBackend):
    """Deterministic 3-D embedding: the mean of each channel / 255, rounded to 0.1.

    The rounding absorbs JPEG error on flat colours, so distances are exact.
    """

    name = "test-mean-colour"
    dim = 3

    def __init__(self, preprocessing: Preprocessing | None = Preprocessing()):
        super().__init__(preprocessing)
        self.calls = 0
        self.images_seen = 0

    def protocol_name(self) -> str:
        return f"test-mean-{self.image_size}px"

    def _embed_valid(self, images):
        self.calls += 1
        self.images_seen += len(images)
        vectors = [np.round(image.reshape(-1, 3).mean(axis=0) / 255.0, 1) for image in images]
        return np.array(vectors), [False] * len(images)


class FailingBackend(MeanColourBackend):
    """Raises on call number ``fail_on``, like a run killed part of the way through."""

    def __init__(self, fail_on: int):
        super().__init__()
        self.fail_on = fail_on

    def _embed_valid(self, images):
        if self.calls + 1 == self.fail_on:
            raise KeyboardInterrupt("simulated kill")
        return super()._embed_valid(images)


def flat_image(colour, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), colour, dtype=np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return path


def smooth_image(seed: int, size: int = 64) -> np.ndarray:
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def dlib_backend():
    return get_backend("dlib")


# ---------------------------------------------------------------- registry


def test_unknown_backend_lists_dlib():
    with pytest.raises(KeyError) as info:
        get_backend("no-such-embedder")
    assert "no-such-embedder" in str(info.value)
    assert "dlib" in str(info.value)


def test_register_backend_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        backends.register_backend("dlib")(MeanColourBackend)


def test_backend_rejects_wrong_image_size():
    backend = MeanColourBackend()
    with pytest.raises(ValueError, match="image 1 of the batch"):
        backend.embed([flat_image(0), flat_image(0, size=32)])


# ---------------------------------------------------------------- dlib backend


def test_dlib_protocol_name(dlib_backend):
    protocol = dlib_backend.protocol_name()
    assert protocol.startswith("dlib-landmarks-crop0.780488-64px-in150px-")
    assert len(protocol.rsplit("-", 1)[1]) == 8
    assert dlib_backend.dim == 128


def test_dlib_real_faces(dlib_backend, celeba_dir):
    files = sorted(celeba_dir.glob("*.jpg"))[:10]
    faces = [load_face(path) for path in files]
    anchor = faces[0]
    shifted = np.roll(anchor, (2, 1), axis=(0, 1)).astype(np.int16) + 15
    copy = np.clip(shifted, 0, 255).astype(np.uint8)

    vectors, found = dlib_backend.embed(faces + [copy])

    assert vectors.shape == (11, 128)
    assert vectors.dtype == np.float32
    assert found[:10].sum() >= 8
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors, axis=1)
    assert (norms > 0.5).all()
    assert (norms < 2.5).all()
    copy_distance = cosine_distance(vectors[0], vectors[10])[0]
    other_distances = cosine_distance_matrix(vectors[:1], vectors[1:10])[0]
    assert copy_distance < other_distances.min()


def test_dlib_batch_independence(dlib_backend):
    images = [smooth_image(seed) for seed in range(5)]
    batch, batch_found = dlib_backend.embed(images)
    for position, image in enumerate(images):
        alone, alone_found = dlib_backend.embed([image])
        np.testing.assert_allclose(alone[0], batch[position], atol=1e-5)
        assert alone_found[0] == batch_found[position]


def test_dlib_degenerate_images(dlib_backend, tmp_path):
    gray = smooth_image(7).mean(axis=2).astype(np.uint8)
    gray_path = tmp_path / "gray.jpg"
    Image.fromarray(gray, mode="L").save(gray_path)
    decoded_gray = decode_rgb(gray_path)
    assert decoded_gray.shape == (64, 64, 3)

    images = [flat_image(0), flat_image(128), decoded_gray]
    vectors, found = dlib_backend.embed(images)

    assert np.isfinite(vectors).all()
    assert (np.linalg.norm(vectors, axis=1) > 0).all()
    assert not found[0], "a face was detected on an all-black image"
    assert not found[1], "a face was detected on a flat gray image"


def test_dlib_empty_batch(dlib_backend):
    vectors, found = dlib_backend.embed([])
    assert vectors.shape == (0, 128)
    assert found.shape == (0,)


# ---------------------------------------------------------------- distances


def test_cosine_distance_hand_values():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 2.0]])
    b = np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [6.0, 8.0], [2.0, 1.0]])
    expected = [1.0, 2.0, 1.0 - 1.0 / math.sqrt(2.0), 0.0, 1.0 - 4.0 / 5.0]
    np.testing.assert_allclose(cosine_distance(a, b), expected, atol=1e-12)


def test_cosine_distance_identical_is_exactly_zero():
    vectors = np.random.default_rng(0).normal(size=(50, 128)).astype(np.float32)
    assert (cosine_distance(vectors, vectors.copy()) == 0.0).all()
    matrix = cosine_distance_matrix(vectors, vectors)
    assert (np.diag(matrix) == 0.0).all()
    assert (matrix >= 0.0).all()
    assert (matrix <= 2.0).all()


def test_cosine_distance_matrix_matches_rowwise():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(6, 16))
    matrix = cosine_distance_matrix(a, b)
    for i in range(4):
        np.testing.assert_allclose(matrix[i], cosine_distance(np.repeat(a[i:i + 1], 6, 0), b),
                                   atol=1e-12)


def test_cosine_distance_zero_vector_is_nan(caplog):
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[1.0, 1.0], [1.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger="facenet.distance"):
        distances = cosine_distance(a, b, labels=["first-row", "zero-row"])
    assert math.isclose(distances[0], 1.0 - 1.0 / math.sqrt(2.0))
    assert math.isnan(distances[1])
    assert "zero-row" in caplog.text
    with caplog.at_level(logging.WARNING, logger="facenet.distance"):
        matrix = cosine_distance_matrix(a, b)
    assert np.isnan(matrix[1]).all()
    assert np.isfinite(matrix[0]).all()


# ---------------------------------------------------------------- store


def make_set(protocol: str = "test-mean-64px", source: str = "test") -> EmbeddingSet:
    return EmbeddingSet(keys=["a.jpg", "b.png"], paths=["/x/a.jpg", "/x/b.png"],
                        sha256=["0" * 64, "1" * 64], face_found=[True, False],
                        embeddings=np.array([[0.5, 0.25, 1.0], [0.0, -1.0, 2.0]], np.float32),
                        protocol=protocol, source=source, preprocessing='{"loader": "x"}')


def test_store_round_trip(tmp_path):
    original = make_set()
    path = save_embeddings(embedding_file(tmp_path, "test", original.protocol), original)
    assert path.name == "test__test-mean-64px.npz"

    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)
    loaded = load_embeddings(path, protocol="test-mean-64px")

    assert loaded.keys.tolist() == ["a.jpg", "b.png"]
    assert loaded.paths.tolist() == ["/x/a.jpg", "/x/b.png"]
    assert loaded.sha256.tolist() == ["0" * 64, "1" * 64]
    assert loaded.face_found.tolist() == [True, False]
    assert loaded.embeddings.dtype == np.float32
    np.testing.assert_array_equal(loaded.embeddings, original.embeddings)
    assert (loaded.protocol, loaded.source, loaded.complete) == ("test-mean-64px", "test", True)
    assert list(tmp_path.glob(".*tmp*")) == []


def test_store_protocol_mismatch_names_both(tmp_path):
    path = save_embeddings(tmp_path / "x.npz", make_set(protocol="proto-a"))
    with pytest.raises(ValueError) as info:
        load_embeddings(path, protocol="proto-b")
    assert "proto-a" in str(info.value)
    assert "proto-b" in str(info.value)
    with pytest.raises(ValueError) as info:
        require_same_protocol({"train": make_set(protocol="proto-a"),
                               "inpaint": make_set(protocol="proto-b")})
    assert "proto-a" in str(info.value)
    assert "proto-b" in str(info.value)


def test_embedding_file_rejects_separator(tmp_path):
    with pytest.raises(ValueError, match="invalid embedding source"):
        embedding_file(tmp_path, "db__x", "p")


def test_store_rejects_duplicate_keys():
    with pytest.raises(ValueError, match="not unique"):
        EmbeddingSet(keys=["a", "a"], paths=["p", "q"], sha256=["1", "2"], face_found=[1, 1],
                     embeddings=np.zeros((2, 3)), protocol="p", source="s", preprocessing="{}")


def write_images(folder: Path, count: int) -> list[ImageItem]:
    levels = [0, 51, 102, 153, 204, 255]
    items = []
    for i in range(count):
        colour = (levels[i % 6], levels[(i // 6) % 6], levels[(i + 3) % 6])
        items.append(ImageItem(key=f"{i}.jpg", path=write_jpeg(folder / f"{i}.jpg", flat_image(colour))))
    return items


def test_embed_images_reuses_known_hashes(tmp_path):
    items = write_images(tmp_path / "images", 5)
    out = tmp_path / "emb.npz"
    first = MeanColourBackend()
    embed_images(items[:3], first, decode_rgb, out, "test", "{}", batch_size=2, progress=False)
    assert first.images_seen == 3

    second = MeanColourBackend()
    result = embed_images(items, second, decode_rgb, out, "test", "{}", batch_size=2,
                          progress=False)

    assert second.images_seen == 2
    assert (result.computed, result.reused) == (2, 3)
    loaded = load_embeddings(out)
    assert loaded.keys.tolist() == [item.key for item in items]
    expected = np.round(decode_rgb(items[0].path).reshape(-1, 3).mean(axis=0) / 255, 1)
    np.testing.assert_array_equal(loaded.embeddings[0], expected.astype(np.float32))


def test_embed_images_resumes_after_kill(tmp_path):
    items = write_images(tmp_path / "images", 7)
    out = tmp_path / "emb.npz"
    with pytest.raises(KeyboardInterrupt):
        embed_images(items, FailingBackend(fail_on=3), decode_rgb, out, "test", "{}",
                     batch_size=2, checkpoint_every=1, checkpoint_seconds=0, progress=False)
    with pytest.raises(ValueError, match="partial"):
        load_embeddings(out)
    assert len(load_embeddings(out, allow_partial=True)) == 4

    resumed = MeanColourBackend()
    result = embed_images(items, resumed, decode_rgb, out, "test", "{}", batch_size=2,
                          progress=False)

    assert resumed.images_seen == 3
    assert result.reused == 4
    assert load_embeddings(out).complete


def test_embed_images_skips_unreadable(tmp_path, caplog):
    items = write_images(tmp_path / "images", 2)
    broken = tmp_path / "images" / "broken.jpg"
    broken.write_bytes(b"not an image")
    items.append(ImageItem(key="broken.jpg", path=broken))
    items.append(ImageItem(key="gone.jpg", path=tmp_path / "images" / "gone.jpg"))
    with caplog.at_level(logging.WARNING, logger="facenet.store"):
        result = embed_images(items, MeanColourBackend(), decode_rgb, tmp_path / "e.npz", "test",
                              "{}", progress=False)
    assert result.embeddings.keys.tolist() == ["0.jpg", "1.jpg"]
    assert "broken.jpg" in caplog.text
    assert "gone.jpg" in caplog.text


def test_same_stem_jpg_and_png_get_distinct_keys(tmp_path):
    layout = Layout(tmp_path / "root")
    write_jpeg(layout.test_images / "a.jpg", smooth_image(1, 80))
    Image.fromarray(smooth_image(2, 80)).save(layout.test_images / "a.png")
    (layout.split_dir / "test.txt").write_text("a.jpg\na.png\n")

    items = split_items(layout, "test")
    result = embed_images(items, MeanColourBackend(), load_face, tmp_path / "e.npz", "test", "{}",
                          progress=False)

    assert result.embeddings.keys.tolist() == ["a.jpg", "a.png"]
    assert result.embeddings.sha256[0] != result.embeddings.sha256[1]


def test_inpaint_items_use_final_gz(tmp_path):
    layout = Layout(tmp_path)
    folder = layout.completions("dcgan")
    for idx, iterations in ((0, (100, 200, 1500)), (2, (100,)), (10, ())):
        for iteration in iterations:
            write_jpeg(folder / str(idx) / "gz" / f"gz_{iteration}.jpg", flat_image(idx * 10))
            write_jpeg(folder / str(idx) / "gen_images" / f"gen_{iteration}.jpg", flat_image(0))

    items = inpaint_items(layout, "dcgan", "stochastic", "center")

    assert [item.key for item in items] == ["0", "2"]
    assert items[0].path.name == "gz_1500.jpg"
    assert final_iteration_file(folder / "0" / "gen_images").name == "gen_1500.jpg"
    assert ExactSizeLoader(64)(items[0].path).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="expected 32x32"):
        ExactSizeLoader(32)(items[0].path)


# ---------------------------------------------------------------- gans_compare

# Colours of the synthetic image database: (idx, image) -> RGB. The fake
# backend embeds an image as its RGB / 255, so the expected distances below
# follow from 1 - cos by hand.
DB_COLOURS = {
    (0, "original"): (204, 51, 51), (0, "alpha"): (204, 51, 51), (0, "beta-gp"): (51, 204, 51),
    (0, "gamma"): (0, 0, 255),
    (2, "original"): (51, 51, 51), (2, "alpha"): (255, 0, 0), (2, "beta-gp"): (102, 102, 102),
    (2, "gamma"): (0, 0, 0),
    (10, "original"): (0, 0, 255), (10, "alpha"): (0, 255, 0), (10, "gamma"): (0, 0, 153),
}
EXPECTED = {
    # (0.8, 0.2, 0.2) against itself, (0.2, 0.8, 0.2) and (0, 0, 1).
    0: {"alpha": 0.0, "beta-gp": 1 - 0.36 / 0.72, "gamma": 1 - 0.2 / math.sqrt(0.72)},
    # (0.2, 0.2, 0.2) against (1, 0, 0), (0.4, 0.4, 0.4) and the zero vector.
    2: {"alpha": 1 - 0.2 / math.sqrt(0.12), "beta-gp": 0.0, "gamma": math.nan},
    # (0, 0, 1) against (0, 1, 0), nothing (no beta-gp file) and (0, 0, 0.6).
    10: {"alpha": 1.0, "beta-gp": math.nan, "gamma": 0.0},
}


def write_database(root: Path) -> Path:
    db = Layout(root).imagesdb
    for (idx, image), colour in DB_COLOURS.items():
        name = "original.jpg" if image == "original" else f"gen/{image}.jpg"
        write_jpeg(db / str(idx) / name, flat_image(colour))
        write_jpeg(db / str(idx) / "masked.jpg", flat_image(255))
    (db / "database.json").write_text(json.dumps({"models": ["alpha", "beta-gp", "gamma"]}))
    return db


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, MeanColourBackend.name, MeanColourBackend)
    return MeanColourBackend.name


def test_gans_compare_columns_per_model(tmp_path, fake_backend, caplog):
    root = tmp_path / "root"
    write_database(root)

    with caplog.at_level(logging.WARNING):
        status = gans_compare.main(["--root", str(root), "--embedder", fake_backend,
                                    "--no-progress"])

    assert status == 0
    table = pd.read_csv(root / "gan_distances.csv")
    assert list(table.columns) == ["idx", "alpha", "beta-gp", "gamma"]
    assert table["idx"].tolist() == [0, 2, 10]
    for idx, expected_row in EXPECTED.items():
        for model, expected in expected_row.items():
            actual = table.loc[table["idx"] == idx, model].item()
            if math.isnan(expected):
                assert math.isnan(actual), f"idx {idx} {model}: expected NaN, got {actual}"
            else:
                assert actual == pytest.approx(expected, abs=1e-6), f"idx {idx} {model}"
    assert "gamma idx 2" in caplog.text
    assert "model beta-gp: no distance for 1 image(s)" in caplog.text
    assert "idx 10" in caplog.text
    embeddings = sorted(path.name for path in (root / "embeddings").glob("*.npz"))
    assert embeddings == [f"db_{name}__test-mean-64px.npz"
                          for name in ("alpha", "beta-gp", "gamma", "original")]


def test_gans_compare_overwrite_guard(tmp_path, fake_backend):
    root = tmp_path / "root"
    db = write_database(root)
    argv = ["--root", str(root), "--embedder", fake_backend, "--no-progress"]
    assert gans_compare.main(argv) == 0
    assert gans_compare.main(argv) == 0, "a rerun on the same inputs must be allowed"

    write_jpeg(db / "0" / "gen" / "alpha.jpg", flat_image((0, 255, 0)))
    with pytest.raises(FileExistsError, match="--overwrite"):
        gans_compare.main(argv)
    assert gans_compare.main(argv + ["--overwrite"]) == 0
    table = pd.read_csv(root / "gan_distances.csv")
    assert table.loc[table["idx"] == 0, "alpha"].item() == pytest.approx(1 - 0.2 / math.sqrt(0.72))


# ---------------------------------------------------------------- calculate_embeddings CLI


def test_calculate_embeddings_cli(tmp_path):
    root = tmp_path / "root"
    layout = Layout(root)
    names = [f"{i:06d}.jpg" for i in range(3)]
    for seed, name in enumerate(names):
        write_jpeg(layout.test_images / name, smooth_image(seed, 96))
    (layout.split_dir / "test.txt").write_text("\n".join(names) + "\n")

    completed = subprocess.run(
        [sys.executable, "facenet/calculate_embeddings.py", "--root", str(root), "--src", "test",
         "--batch_size", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr
    files = list(layout.embeddings.glob("test__dlib-landmarks-crop0.780488-64px-in150px-*.npz"))
    assert len(files) == 1, completed.stderr
    loaded = load_embeddings(files[0])
    assert loaded.keys.tolist() == names
    assert loaded.embeddings.shape == (3, 128)
    assert list((layout.embeddings / "provenance").glob("embeddings-*.json"))


def test_calculate_embeddings_cli_requires_gan(tmp_path):
    completed = subprocess.run(
        [sys.executable, "facenet/calculate_embeddings.py", "--root", str(tmp_path),
         "--src", "inpaint"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "--gan is required" in completed.stderr


# ---------------------------------------------------------------- protocol options


def test_dlib_alignment_none_protocol(dlib_backend):
    backend = get_backend("dlib", alignment="none")
    vectors, found = backend.embed([smooth_image(3)])

    assert backend.protocol_name().startswith("dlib-none-crop0.780488-64px-in150px-")
    assert backend.protocol_name() != dlib_backend.protocol_name()
    assert vectors.shape == (1, 128)
    assert np.isfinite(vectors).all()
    assert not found[0], "alignment none runs no detector, so no face can be recorded"


def test_dlib_rejects_mtcnn_alignment():
    with pytest.raises(ValueError) as info:
        get_backend("dlib", alignment="mtcnn")
    assert "'mtcnn'" in str(info.value)
    assert "landmarks, none" in str(info.value)


def test_dlib_full_resolution_input(celeba_dir):
    backend = get_backend("dlib", preprocessing=None)
    image = decode_rgb(sorted(celeba_dir.glob("*.jpg"))[0])
    assert image.shape[:2] != (64, 64)

    vectors, found = backend.embed([image])

    assert backend.protocol_name().startswith("dlib-landmarks-fullres-in150px-")
    assert np.isfinite(vectors).all()
    assert found[0]


def test_backend_options_reject_facenet_flags_for_dlib():
    from facenet.options import add_backend_arguments, backend_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--embedder", "dlib", "--model_path", "model.pb"])
    with pytest.raises(ValueError, match="--model_path applies only to --embedder facenet"):
        backend_from_args(args, Preprocessing())


def test_get_backend_image_size_means_default_crop():
    backend = get_backend("dlib", image_size=32)
    assert backend.preprocessing == Preprocessing(size=32)
    assert "crop0.780488-32px" in backend.protocol_name()


# ---------------------------------------------------------------- bad input, recorded


def test_dlib_degenerate_images_recorded(dlib_backend, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(flat_image(0)).save(folder / "black.png")
    Image.fromarray(flat_image(128)).save(folder / "gray.png")
    Image.fromarray(smooth_image(7).mean(axis=2).astype(np.uint8), mode="L").save(folder / "mono.jpg")
    items = [ImageItem(key=name, path=folder / name) for name in ("black.png", "gray.png", "mono.jpg")]

    result = embed_images(items, dlib_backend, decode_rgb, tmp_path / "e.npz", "test", "{}",
                          progress=False)

    loaded = load_embeddings(result.path)
    assert loaded.keys.tolist() == ["black.png", "gray.png", "mono.jpg"]
    assert np.isfinite(loaded.embeddings).all()
    assert loaded.face_found.tolist() == [False, False, False]


# ---------------------------------------------------------------- scale and resume


def test_embed_images_keeps_input_order_with_reuse(tmp_path):
    items = write_images(tmp_path / "images", 5)
    out = tmp_path / "emb.npz"
    embed_images([items[1], items[3]], MeanColourBackend(), decode_rgb, out, "test", "{}",
                 progress=False)

    result = embed_images(items, MeanColourBackend(), decode_rgb, out, "test", "{}", batch_size=2,
                          progress=False)

    assert (result.computed, result.reused) == (3, 2)
    assert load_embeddings(out).keys.tolist() == [item.key for item in items]


def test_embed_images_checkpoint_time_floor(tmp_path):
    items = write_images(tmp_path / "images", 7)
    out = tmp_path / "emb.npz"
    with pytest.raises(KeyboardInterrupt):
        embed_images(items, FailingBackend(fail_on=3), decode_rgb, out, "test", "{}",
                     batch_size=2, checkpoint_every=1, checkpoint_seconds=3600, progress=False)
    assert not out.exists(), "a checkpoint was saved before checkpoint_seconds had passed"


class CountingLoader:
    """Make a synthetic 128 px image per call and track how many are alive at once."""

    def __init__(self):
        self.alive = 0
        self.max_alive = 0
        self.loaded = 0

    def __call__(self, path: Path) -> np.ndarray:
        image = np.full((128, 128, 3), self.loaded % 256, dtype=np.uint8)
        self.loaded += 1
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(image, self._release)
        return image

    def _release(self) -> None:
        self.alive -= 1


def test_embed_images_holds_one_batch(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    items = []
    for i in range(300):
        path = folder / f"{i}.bin"
        path.write_text(str(i))
        items.append(ImageItem(key=path.name, path=path))
    loader = CountingLoader()

    tracemalloc.start()
    try:
        result = embed_images(items, MeanColourBackend(Preprocessing(size=128)), loader,
                              tmp_path / "e.npz", "test", "{}", batch_size=8, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert loader.loaded == 300
    assert result.computed == 300
    assert loader.max_alive <= 8, f"{loader.max_alive} decoded images were alive at once"
    # 300 decoded images take 14.7 MB; one batch of 8 takes 0.4 MB.
    all_images_bytes = 300 * 128 * 128 * 3
    assert peak < all_images_bytes / 4, f"peak traced memory {peak} bytes"


def test_workers_need_get_backend(tmp_path):
    items = write_images(tmp_path / "images", 2)
    with pytest.raises(ValueError, match="get_backend"):
        embed_images(items, MeanColourBackend(), decode_rgb, tmp_path / "e.npz", "test", "{}",
                     progress=False, workers=2)


def test_dlib_workers_match_single_process(dlib_backend, tmp_path):
    folder = tmp_path / "images"
    items = [ImageItem(key=f"{seed}.jpg", path=write_jpeg(folder / f"{seed}.jpg", smooth_image(seed)))
             for seed in range(6)]
    loader = ExactSizeLoader(64)

    single = embed_images(items, dlib_backend, loader, tmp_path / "one.npz", "test",
                          loader.describe(), batch_size=2, progress=False)
    parallel = embed_images(items, dlib_backend, loader, tmp_path / "two.npz", "test",
                            loader.describe(), batch_size=2, progress=False, workers=2)

    assert parallel.embeddings.keys.tolist() == single.embeddings.keys.tolist()
    np.testing.assert_array_equal(parallel.embeddings.embeddings, single.embeddings.embeddings)
    np.testing.assert_array_equal(parallel.embeddings.face_found, single.embeddings.face_found)


# ---------------------------------------------------------------- full-resolution training images


def test_train_full_resolution_is_its_own_protocol(tmp_path):
    import underfit
    from facenet import calculate_embeddings

    root = tmp_path / "root"
    layout = Layout(root)
    data = tmp_path / "data"
    train_names = ["000001.jpg", "000002.jpg"]
    for seed, name in enumerate(train_names):
        write_jpeg(data / name, smooth_image(seed, 96))
    write_jpeg(layout.test_images / "000003.jpg", smooth_image(3, 96))
    (layout.split_dir / "train.txt").write_text("\n".join(train_names) + "\n")
    (layout.split_dir / "test.txt").write_text("000003.jpg\n")
    (layout.split_dir / "manifest.json").write_text(json.dumps({"data_dir": str(data)}))
    write_jpeg(layout.completions("dcgan") / "0" / "gz" / "gz_10.jpg", smooth_image(4))
    common = ["--root", str(root), "--no-progress"]

    assert calculate_embeddings.main(common + ["--src", "train", "--train_full_resolution"]) == 0
    assert calculate_embeddings.main(common + ["--src", "test"]) == 0
    assert calculate_embeddings.main(common + ["--src", "inpaint", "--gan", "dcgan"]) == 0
    with pytest.raises(ValueError, match="applies only to --src train"):
        calculate_embeddings.main(common + ["--src", "test", "--train_full_resolution"])

    train_file = next(layout.embeddings.glob("train__*.npz"))
    test_file = next(layout.embeddings.glob("test__*.npz"))
    train_protocol = load_embeddings(train_file).protocol
    test_protocol = load_embeddings(test_file).protocol
    assert "-fullres-" in train_protocol
    assert "-crop0.780488-64px-" in test_protocol
    assert train_file.stem.endswith(train_protocol)
    with pytest.raises(ValueError) as info:
        underfit.main(["--root", str(root), "--no-progress"])
    assert repr(train_protocol) in str(info.value)
    assert repr(test_protocol) in str(info.value)


def test_compare_rerun_may_add_models_but_not_change_them(tmp_path):
    import json as json_module

    from facenet.gans_compare import check_overwrite, inputs_path

    csv_path = tmp_path / "gan_distances.csv"
    csv_path.write_text("idx,m1\n0,0.1\n")
    earlier = {"db_original": "a", "db_m1": "b"}
    inputs_path(csv_path).write_text(json_module.dumps(
        {"inputs_sha256": "old", "protocol": "p", "sources": earlier}))
    check_overwrite(csv_path, "new", False, {**earlier, "db_m2": "c"}, "p")
    with pytest.raises(FileExistsError, match="db_m1"):
        check_overwrite(csv_path, "new", False, {"db_original": "a", "db_m1": "x"}, "p")
    with pytest.raises(FileExistsError):
        check_overwrite(csv_path, "new", False, {**earlier, "db_m2": "c"}, "other protocol")
    check_overwrite(csv_path, "new", True, {"db_original": "z"}, "p")


def test_embed_images_moved_folder_keeps_file(tmp_path):
    import shutil

    items = write_images(tmp_path / "images", 3)
    out = tmp_path / "emb.npz"
    embed_images(items, MeanColourBackend(), decode_rgb, out, "test", "{}", progress=False)
    before = out.read_bytes()
    shutil.copytree(tmp_path / "images", tmp_path / "moved")
    moved = [ImageItem(key=item.key, path=tmp_path / "moved" / item.path.name) for item in items]
    result = embed_images(moved, MeanColourBackend(), decode_rgb, out, "test", "{}", progress=False)
    assert result.reused == 3
    assert out.read_bytes() == before
