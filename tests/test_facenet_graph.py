"""Tests of the facenet backend on small FaceNet-like graphs that the tests build themselves.

The graphs have FaceNet's tensor names (``input``, ``phase_train``,
``embeddings``) but a few random-weight layers, so they load in well under a
second. ``phase_train`` True scales and shifts the hidden layer, so a backend
that fed True would give other vectors than the reference session run with False.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from facenet.alignment import standardize  # noqa: E402
from facenet.backends import get_backend  # noqa: E402
from facenet.graph_model import GraphModel, GraphTensorsNotFound  # noqa: E402
from facenet.store import load_embeddings  # noqa: E402
from study.images import Preprocessing, decode_rgb  # noqa: E402
from study.layout import Layout  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = 20
DIM = 6


@dataclass
class SavedGraph:
    """A saved test graph and an open session on the graph it was saved from."""

    frozen: Path
    checkpoint: Path
    session: object
    images: object
    phase_train: object
    output: object

    def reference(self, model_input: np.ndarray, phase_train: bool = False) -> np.ndarray:
        """Run the original graph on float32 model inputs ``[N, S, S, 3]``."""
        return self.session.run(self.output, {self.images: model_input, self.phase_train: phase_train})


def build_graph(folder: Path, size: int = SIZE, dim: int = DIM, input_name: str = "input",
                output_name: str = "embeddings", phase_train: bool = True,
                identity_input: bool = False, fixed_size: bool = True) -> SavedGraph:
    """Save a FaceNet-like graph as ``<folder>/frozen.pb`` and as a checkpoint in ``<folder>/checkpoint``.

    ``identity_input`` makes ``input`` an Identity of another placeholder, as
    in FaceNet's training graphs, where it follows the input queue.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size * 1000 + dim)
    hidden_side = (size + 1) // 2
    kernel_value = rng.normal(0.0, 0.5, (3, 3, 3, 4)).astype(np.float32)
    bias_value = rng.normal(0.0, 0.1, 4).astype(np.float32)
    dense_value = rng.normal(0.0, 0.3, (hidden_side * hidden_side * 4, dim)).astype(np.float32)

    graph = tf.Graph()
    with graph.as_default():
        shape = [None, size, size, 3] if fixed_size else [None, None, None, 3]
        if identity_input:
            batch = tf.compat.v1.placeholder(tf.float32, shape, name="image_batch")
            images = tf.identity(batch, name=input_name)
        else:
            images = batch = tf.compat.v1.placeholder(tf.float32, shape, name=input_name)
        if phase_train:
            training = tf.compat.v1.placeholder(tf.bool, [], name="phase_train")
        else:
            training = tf.constant(False)
        kernel = tf.compat.v1.get_variable("conv/kernel", initializer=kernel_value)
        bias = tf.compat.v1.get_variable("conv/bias", initializer=bias_value)
        dense = tf.compat.v1.get_variable("dense/kernel", initializer=dense_value)
        hidden = tf.nn.relu(tf.nn.conv2d(images, kernel, 2, "SAME") + bias)
        # tf.where, not tf.cond: cond branches become graph functions, and two
        # graphs with equally named but different functions cannot both be
        # imported into one TensorFlow 2 process.
        hidden = tf.where(training, hidden * 3.0 + 0.5, hidden)
        flat = tf.reshape(hidden, [-1, hidden_side * hidden_side * 4])
        output = tf.math.l2_normalize(tf.matmul(flat, dense), axis=1, name=output_name)

        session = tf.compat.v1.Session(graph=graph)
        session.run(tf.compat.v1.global_variables_initializer())
        checkpoint = folder / "checkpoint"
        tf.compat.v1.train.Saver().save(session, str(checkpoint / "model-test.ckpt"), global_step=7)
        frozen_def = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), [output_name])
    frozen = folder / "frozen.pb"
    frozen.write_bytes(frozen_def.SerializeToString())
    return SavedGraph(frozen=frozen, checkpoint=checkpoint, session=session, images=batch,
                     phase_train=training, output=output)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    built = build_graph(tmp_path_factory.mktemp("graph"))
    yield built
    built.session.close()


def facenet_backend(model_path: Path, size: int = SIZE, **options):
    options.setdefault("alignment", "none")
    return get_backend("facenet", preprocessing=Preprocessing(size=size), model_path=model_path,
                       **options)


def random_images(count: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------- loading


def test_graph_sizes_read_from_graph(graph):
    model = GraphModel(graph.frozen)
    assert model.input_size == SIZE
    assert model.dim == DIM
    assert model.kind == "frozen"

    backend = facenet_backend(graph.frozen)
    protocol = backend.protocol_name()
    assert protocol.startswith(f"facenet-none-fixed-crop0.780488-{SIZE}px-in{SIZE}px-")
    assert len(protocol.rsplit("-", 1)[1]) == 8
    assert backend.dim == DIM


def test_graph_other_input_size(tmp_path):
    built = build_graph(tmp_path, size=28, dim=3)
    try:
        backend = facenet_backend(built.frozen, size=64)
        vectors, _ = backend.embed(list(random_images(2, size=64)))
    finally:
        built.session.close()
    assert backend.input_size == 28
    assert vectors.shape == (2, 3)
    assert "-crop0.780488-64px-in28px-" in backend.protocol_name()


def test_graph_open_input_size_needs_option(tmp_path):
    built = build_graph(tmp_path, fixed_size=False)
    built.session.close()
    with pytest.raises(ValueError, match="--input_size"):
        GraphModel(built.frozen)
    assert GraphModel(built.frozen, input_size=SIZE).input_size == SIZE


def test_graph_checkpoint_matches_frozen(tmp_path, graph):
    built = build_graph(tmp_path, identity_input=True)
    built.session.close()
    images = list(random_images(3, seed=1))

    frozen_vectors, _ = facenet_backend(graph.frozen).embed(images)
    checkpoint_backend = facenet_backend(built.checkpoint)
    checkpoint_vectors, _ = checkpoint_backend.embed(images)

    model = GraphModel(built.checkpoint)
    assert model.kind == "checkpoint"
    assert [path.suffix for path in model.files[:2]] == [".meta", ".index"]
    assert model.files[2].name.startswith("model-test.ckpt-7.data-")
    np.testing.assert_allclose(checkpoint_vectors, frozen_vectors, atol=1e-6)
    assert checkpoint_backend.protocol_name() != facenet_backend(graph.frozen).protocol_name()


def test_graph_without_phase_train(tmp_path):
    built = build_graph(tmp_path, phase_train=False)
    images = random_images(2, seed=2)
    try:
        expected = built.session.run(built.output, {built.images: standardize(images, "fixed")})
    finally:
        built.session.close()
    vectors, _ = facenet_backend(built.frozen).embed(list(images))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


# ---------------------------------------------------------------- what the graph is fed


def test_graph_feeds_phase_train_false(graph):
    images = random_images(4, seed=3)
    model_input = ((images.astype(np.float64) - 127.5) / 128.0).astype(np.float32)
    expected = graph.reference(model_input, phase_train=False)
    training = graph.reference(model_input, phase_train=True)
    assert np.abs(training - expected).max() > 0.05, "phase_train does not change the test graph"

    vectors, found = facenet_backend(graph.frozen).embed(list(images))

    assert vectors.shape == (4, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert not found.any()


def test_graph_prewhiten_input(graph):
    images = random_images(3, seed=4)
    values = images.astype(np.float64)
    expected_input = np.empty(values.shape, np.float32)
    for i, image in enumerate(values):
        std = max(image.std(), 1.0 / np.sqrt(image.size))
        expected_input[i] = (image - image.mean()) / std

    vectors, _ = facenet_backend(graph.frozen, standardization="prewhiten").embed(list(images))

    np.testing.assert_allclose(vectors, graph.reference(expected_input), atol=1e-5)
    fixed, _ = facenet_backend(graph.frozen, standardization="fixed").embed(list(images))
    assert np.abs(fixed - vectors).max() > 1e-3


def test_standardize_values():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3) * 5
    fixed = standardize(image, "fixed")
    assert fixed.dtype == np.float32
    np.testing.assert_allclose(fixed, (image.astype(np.float64) - 127.5) / 128.0, rtol=1e-7)

    whitened = standardize(image, "prewhiten")
    assert abs(float(whitened.mean())) < 1e-6
    assert float(whitened.std()) == pytest.approx(1.0, abs=1e-5)

    flat = np.full((2, 4, 4, 3), 200, dtype=np.uint8)
    assert (standardize(flat, "prewhiten") == 0.0).all()
    # One of 48 values differs by 1, so the std (0.14) is below the floor 1/sqrt(48) (0.144).
    almost_flat = flat[:1].copy()
    almost_flat[0, 0, 0, 0] = 201
    std = almost_flat.astype(np.float64).std()
    floor = 1.0 / np.sqrt(almost_flat[0].size)
    assert std < floor
    expected = (almost_flat.astype(np.float64) - almost_flat.mean()) / floor
    np.testing.assert_allclose(standardize(almost_flat, "prewhiten"), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="prewhiten"):
        standardize(image, "unit")


def test_graph_batch_independence(graph):
    backend = facenet_backend(graph.frozen)
    images = list(random_images(5, seed=5))
    batch, _ = backend.embed(images)
    for position, image in enumerate(images):
        alone, _ = backend.embed([image])
        np.testing.assert_allclose(alone[0], batch[position], atol=1e-5)


def test_graph_degenerate_images(graph, tmp_path):
    gray_path = tmp_path / "gray.jpg"
    Image.fromarray(random_images(1, seed=6)[0].mean(axis=2).astype(np.uint8), mode="L").save(gray_path)
    images = [np.zeros((SIZE, SIZE, 3), np.uint8), np.full((SIZE, SIZE, 3), 128, np.uint8),
              decode_rgb(gray_path)]

    for standardization in ("fixed", "prewhiten"):
        vectors, found = facenet_backend(graph.frozen, standardization=standardization).embed(images)
        assert np.isfinite(vectors).all(), standardization
        assert not found.any(), standardization


# ---------------------------------------------------------------- invalid models


def test_graph_wrong_tensor_names_lists_candidates(tmp_path):
    built = build_graph(tmp_path, input_name="images", output_name="features")
    built.session.close()
    with pytest.raises(GraphTensorsNotFound) as info:
        GraphModel(built.frozen)
    message = str(info.value)
    assert "input:0" in message
    assert "embeddings:0" in message
    assert "images:0 (float32, (None, 20, 20, 3))" in message
    assert "phase_train:0 (bool, ())" in message
    assert "features:0 (float32, (None, 6))" in message


def test_graph_file_not_a_graph(tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(b"this is not a protocol buffer \xff\xff\xff")
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        GraphModel(path)


def test_graph_folder_without_meta(tmp_path, graph):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "20180402-114759.pb").write_bytes(graph.frozen.read_bytes())
    with pytest.raises(ValueError, match="20180402-114759.pb"):
        GraphModel(folder)
    with pytest.raises(FileNotFoundError, match="not found"):
        GraphModel(tmp_path / "absent.pb")


def test_facenet_backend_needs_model_path():
    with pytest.raises(ValueError, match="--model_path"):
        get_backend("facenet", alignment="none")
    with pytest.raises(ValueError, match="landmarks"):
        get_backend("facenet", alignment="landmarks")


# ---------------------------------------------------------------- command line


def test_calculate_embeddings_cli_facenet(tmp_path, graph):
    root = tmp_path / "root"
    layout = Layout(root)
    names = [f"{i:06d}.jpg" for i in range(3)]
    layout.test_images.mkdir(parents=True)
    for seed, name in enumerate(names):
        Image.fromarray(random_images(1, size=96, seed=seed)[0]).save(layout.test_images / name)
    (layout.split_dir / "test.txt").write_text("\n".join(names) + "\n")

    completed = subprocess.run(
        [sys.executable, "facenet/calculate_embeddings.py", "--root", str(root), "--src", "test",
         "--embedder", "facenet", "--model_path", str(graph.frozen), "--alignment", "none",
         "--standardization", "prewhiten", "--batch_size", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=180)

    assert completed.returncode == 0, completed.stderr
    files = list(layout.embeddings.glob("test__facenet-none-prewhiten-crop0.780488-64px-in20px-*.npz"))
    assert len(files) == 1, completed.stderr
    loaded = load_embeddings(files[0])
    assert loaded.keys.tolist() == names
    assert loaded.embeddings.shape == (3, DIM)
    assert np.isfinite(loaded.embeddings).all()
    records = list((layout.embeddings / "provenance").glob("embeddings-*.json"))
    details = json.loads(records[0].read_text())["config"]["protocol_details"]
    assert details["protocol"] == loaded.protocol
    assert (details["input_size"], details["dim"]) == (SIZE, DIM)
    assert details["standardization"] == "prewhiten"
