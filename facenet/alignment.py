"""Resizing, face alignment with MTCNN and pixel standardization for graph models.

Every backend input goes through :func:`scale_short_side` first: the 64 px
training crop is upsampled to the model's input size, and a full-resolution
image is scaled so that its short side has that size. Alignment then cuts
the model input out of that frame.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from study.errors import StageError

log = logging.getLogger(__name__)

STANDARDIZATIONS = ("fixed", "prewhiten")


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize uint8 ``image`` with bicubic interpolation when enlarging and area averaging when shrinking."""
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    grows = width * height > image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_CUBIC if grows else cv2.INTER_AREA
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def scale_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``image`` so that its short side is ``size`` pixels, keeping the aspect ratio."""
    height, width = image.shape[:2]
    if min(height, width) == size:
        return image
    scale = size / min(height, width)
    return resize_to(image, max(size, round(width * scale)), max(size, round(height * scale)))


def center_square(image: np.ndarray) -> np.ndarray:
    """Return the central square of ``image`` whose side is the short edge."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def standardize(images: np.ndarray, method: str) -> np.ndarray:
    """Map uint8 images ``[N, H, W, 3]`` to the float32 input of a FaceNet graph.

    ``fixed`` computes ``(x - 127.5) / 128`` for every pixel value.
    ``prewhiten`` subtracts each image's mean and divides by its standard
    deviation, floored at ``1 / sqrt(H * W * 3)`` so that a flat image gives
    zeros instead of a division by zero.
    """
    if method not in STANDARDIZATIONS:
        raise ValueError(f"invalid standardization {method!r}; valid: {', '.join(STANDARDIZATIONS)}")
    values = np.asarray(images, dtype=np.float64)
    if method == "fixed":
        return ((values - 127.5) / 128.0).astype(np.float32)
    count = values[0].size if len(values) else 1
    axes = tuple(range(1, values.ndim))
    mean = values.mean(axis=axes, keepdims=True)
    std = np.maximum(values.std(axis=axes, keepdims=True), 1.0 / math.sqrt(count))
    return ((values - mean) / std).astype(np.float32)


class MtcnnAligner:
    """Face crops from MTCNN boxes: the PyPI package ``mtcnn``, which ships its weights.

    In a frame whose short side is ``output_size``, MTCNN detects faces, the
    box described below is widened by ``margin`` pixels (half on each side)
    and clipped to the frame, and the crop is resized to ``output_size``
    square. The margin is FaceNet's 44 px at 160 px, scaled to
    ``output_size``. When MTCNN finds no face, the central square of the
    frame is used and the image is recorded as ``face_found`` False.
    """

    MARGIN_AT_160 = 44
    # Detector settings of FaceNet's align_dataset_mtcnn.py (davidsandberg/facenet):
    # minimum face 20 px, pyramid scale 0.709, stage thresholds 0.6, 0.7, 0.7.
    # mtcnn 1.0.0 has the same defaults except an ONet threshold of 0.8.
    DETECTOR_SETTINGS = {"min_face_size": 20, "scale_factor": 0.709, "threshold_pnet": 0.6,
                         "threshold_rnet": 0.7, "threshold_onet": 0.7}

    def __init__(self, output_size: int):
        try:
            import mtcnn
            import tensorflow as tf
        except ImportError as exc:
            raise StageError(f"MTCNN alignment needs the package mtcnn ({exc}); install it with "
                             "'pip install -r requirements.txt', or pass --alignment none") from exc
        self.output_size = output_size
        self.margin = round(self.MARGIN_AT_160 * output_size / 160)
        # mtcnn runs on "CPU:0" unless a device is passed, so pass the GPU where there is one.
        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        self._detector = mtcnn.MTCNN(device=device)

    @staticmethod
    def weight_files() -> list[Path]:
        """Return the MTCNN weight files shipped with the mtcnn package, sorted by name."""
        import mtcnn

        files = sorted((Path(mtcnn.__file__).parent / "assets" / "weights").glob("*"))
        if not files:
            raise FileNotFoundError(f"no MTCNN weight files under {Path(mtcnn.__file__).parent}; "
                                    "reinstall the package mtcnn")
        return files

    def detect(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Return the chosen face box ``[x1, y1, x2, y2]`` of each frame, or None where none is found.

        Among several faces, the box with the largest area minus twice the
        squared distance of its center from the frame center wins, as in
        FaceNet's alignment script.
        """
        # NOTE: MTCNN gets one frame per call. Given a list, mtcnn 1.0.0
        # returns other boxes and confidences for every frame after the first
        # than for the same frames alone (up to 3 px on 6 of 48 CelebA crops).
        # A face's box would then depend on the other images in its batch.
        # Batched calls were about 6 times faster on a 2-core CPU.
        boxes = []
        for frame in frames:
            faces = self._detector.detect_faces(frame, box_format="xyxy", **self.DETECTOR_SETTINGS)
            boxes.append(self._choose_box(faces, frame.shape))
        return boxes

    @staticmethod
    def _choose_box(faces: list[dict], shape: tuple) -> np.ndarray | None:
        if not faces:
            return None
        candidates = np.array([face["box"] for face in faces], dtype=np.float64)
        areas = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
        centers = (candidates[:, :2] + candidates[:, 2:]) / 2.0
        frame_center = np.array([shape[1], shape[0]], dtype=np.float64) / 2.0
        offsets = np.sum((centers - frame_center) ** 2, axis=1)
        return candidates[int(np.argmax(areas - 2.0 * offsets))]

    def crop_region(self, frame_shape: tuple, box: np.ndarray) -> tuple[int, int, int, int]:
        """Return ``(left, top, right, bottom)`` of ``box`` widened by the margin and clipped to the frame."""
        height, width = frame_shape[:2]
        half = self.margin / 2.0
        left = int(np.clip(math.floor(box[0] - half), 0, width - 1))
        top = int(np.clip(math.floor(box[1] - half), 0, height - 1))
        right = int(np.clip(math.ceil(box[2] + half), left + 1, width))
        bottom = int(np.clip(math.ceil(box[3] + half), top + 1, height))
        return left, top, right, bottom

    def crop(self, frame: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        """Return the ``output_size`` square model input cut from ``frame`` around ``box``.

        The widened box is resized to a square even where clipping made it
        oblong, as FaceNet's alignment script does.
        """
        size = self.output_size
        if box is None:
            return resize_to(center_square(frame), size, size)
        left, top, right, bottom = self.crop_region(frame.shape, box)
        return resize_to(frame[top:bottom, left:right], size, size)

    def align(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        """Return the model input of each image and whether MTCNN found a face on it."""
        frames = [scale_short_side(image, self.output_size) for image in images]
        boxes = self.detect(frames)
        crops = [self.crop(frame, box) for frame, box in zip(frames, boxes)]
        return crops, [box is not None for box in boxes]
