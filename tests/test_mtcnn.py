"""Tests of MTCNN alignment (the PyPI package mtcnn) on real CelebA faces after the training crop."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("mtcnn", reason="the package mtcnn is not installed; "
                                    "'pip install -r requirements.txt' installs it")

from facenet.alignment import MtcnnAligner, scale_short_side  # noqa: E402
from facenet.backends import get_backend  # noqa: E402
from study.images import Preprocessing, load_face  # noqa: E402
from test_facenet_graph import build_graph  # noqa: E402

INPUT_SIZE = 160


@pytest.fixture(scope="module")
def aligner():
    return MtcnnAligner(INPUT_SIZE)


@pytest.fixture
def faces(celeba_dir):
    """The first 8 faces of the CelebA sample after the 64 px training crop."""
    return [load_face(path) for path in sorted(celeba_dir.glob("*.jpg"))[:8]]


def test_mtcnn_margin_scales_with_input_size():
    assert MtcnnAligner.MARGIN_AT_160 == 44
    assert MtcnnAligner(80).margin == 22


def test_mtcnn_finds_faces_and_crop_contains_box(aligner, faces):
    frames = [scale_short_side(face, INPUT_SIZE) for face in faces]
    assert frames[0].shape == (INPUT_SIZE, INPUT_SIZE, 3)

    boxes = aligner.detect(frames)

    found = [box for box in boxes if box is not None]
    assert len(found) >= 6, f"MTCNN found a face on only {len(found)} of 8 CelebA images"
    for box in found:
        left, top, right, bottom = aligner.crop_region(frames[0].shape, box)
        assert left <= box[0], f"crop left edge {left} cuts the box {box}"
        assert top <= box[1], f"crop top edge {top} cuts the box {box}"
        assert right >= box[2], f"crop right edge {right} cuts the box {box}"
        assert bottom >= box[3], f"crop bottom edge {bottom} cuts the box {box}"
        # The training crop centers the face, so the box center is near the frame center.
        center = (box[:2] + box[2:]) / 2
        assert np.abs(center - INPUT_SIZE / 2).max() < INPUT_SIZE / 4, f"box {box} is off center"
    crops, face_found = aligner.align(faces)
    assert face_found == [box is not None for box in boxes]
    assert all(crop.shape == (INPUT_SIZE, INPUT_SIZE, 3) for crop in crops)


def test_mtcnn_no_face_gives_center_crop(aligner):
    black = np.zeros((64, 64, 3), np.uint8)
    gray = np.full((64, 64, 3), 128, np.uint8)
    # The central square of this frame is columns 16 to 80; the bright band
    # is wider, so that upsampling blurs its edges outside the crop.
    wide = np.zeros((64, 96, 3), np.uint8)
    wide[:, 8:88] = 200

    crops, found = aligner.align([black, gray, wide])

    assert found == [False, False, False]
    assert (crops[0] == 0).all()
    assert (crops[1] == 128).all()
    assert (crops[2] == 200).all()


def test_mtcnn_batch_matches_single(aligner, faces):
    black = np.zeros_like(faces[0])
    batch = [scale_short_side(image, INPUT_SIZE) for image in [faces[0], black, *faces[1:4]]]

    together = aligner.detect(batch)

    for frame, box in zip(batch, together):
        alone = aligner.detect([frame])[0]
        assert (alone is None) == (box is None)
        if box is not None:
            np.testing.assert_allclose(alone, box, atol=1e-3)
    assert together[1] is None, "a face was detected on an all-black image"


def test_facenet_backend_with_mtcnn(tmp_path, faces):
    built = build_graph(tmp_path, size=INPUT_SIZE, dim=8)
    built.session.close()
    backend = get_backend("facenet", preprocessing=Preprocessing(), model_path=built.frozen)
    plain = get_backend("facenet", preprocessing=Preprocessing(), model_path=built.frozen,
                        alignment="none")

    images = faces[:5]
    vectors, found = backend.embed(images)

    assert backend.alignment == "mtcnn"
    assert backend.protocol_name().startswith("facenet-mtcnn-fixed-crop0.780488-64px-in160px-")
    assert backend.protocol_name().rsplit("-", 1)[1] != plain.protocol_name().rsplit("-", 1)[1], \
        "the protocol hash must cover the MTCNN weights"
    assert vectors.shape == (5, 8)
    assert np.isfinite(vectors).all()
    assert found.sum() >= 4
    for position, image in enumerate(images):
        alone, alone_found = backend.embed([image])
        np.testing.assert_allclose(alone[0], vectors[position], atol=1e-5)
        assert alone_found[0] == found[position]
    black_vectors, black_found = backend.embed([np.zeros((64, 64, 3), np.uint8)])
    assert np.isfinite(black_vectors).all()
    assert not black_found[0]
