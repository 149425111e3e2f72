"""Registry of face-embedding backends.

A backend maps a list of uint8 RGB face images, all ``image_size`` pixels
square, to float32 embeddings ``[N, dim]`` and a flag per image that is True
when a face was detected. Backends register under a name with
:func:`register_backend`; :func:`get_backend` builds one by name.
"""

from __future__ import annotations

import abc
import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from study.errors import StageError
from study.images import IMAGE_SIZE

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "dlib"


class EmbeddingBackend(abc.ABC):
    """Base class of embedding backends, which implement ``protocol_name`` and ``_embed_valid``.

    ``embed`` checks the inputs, so ``_embed_valid`` receives a non-empty list
    of C-contiguous uint8 arrays of shape ``[image_size, image_size, 3]``.
    """

    name: str = ""
    dim: int = 0

    def __init__(self, image_size: int = IMAGE_SIZE):
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        self.image_size = image_size

    @abc.abstractmethod
    def protocol_name(self) -> str:
        """Return a short id of backend, alignment, input size and model weights.

        Embeddings are comparable only when their protocol names are equal.
        """

    @abc.abstractmethod
    def _embed_valid(self, images: list[np.ndarray]) -> tuple[np.ndarray, Sequence[bool]]:
        """Embed checked images and return ``(vectors [N, dim], face_found [N])``."""

    def embed(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embed ``images`` and return float32 ``[N, dim]`` and bool ``face_found [N]``.

        Raises ValueError naming the position of an image that is not uint8
        RGB of ``image_size`` x ``image_size`` pixels.
        """
        checked = [self._check_image(position, image) for position, image in enumerate(images)]
        if not checked:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        vectors, found = self._embed_valid(checked)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(checked), self.dim)
        return vectors, np.asarray(found, dtype=bool).reshape(len(checked))

    def _check_image(self, position: int, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        expected = (self.image_size, self.image_size, 3)
        if image.dtype != np.uint8 or image.shape != expected:
            raise ValueError(
                f"image {position} of the batch has shape {image.shape} and dtype {image.dtype}; "
                f"the {self.name} backend with image_size={self.image_size} expects uint8 "
                f"{expected} RGB (decode with study.images.decode_rgb or load_face)")
        return np.ascontiguousarray(image)


BACKENDS: dict[str, type[EmbeddingBackend]] = {}


def register_backend(name: str) -> Callable[[type[EmbeddingBackend]], type[EmbeddingBackend]]:
    """Return a class decorator that adds an EmbeddingBackend subclass to BACKENDS as ``name``."""

    def decorator(cls: type[EmbeddingBackend]) -> type[EmbeddingBackend]:
        if name in BACKENDS:
            raise ValueError(f"embedding backend {name!r} is already registered "
                             f"(by {BACKENDS[name].__qualname__})")
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return decorator


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str, **options) -> EmbeddingBackend:
    """Build the backend registered as ``name`` with ``options`` (such as ``image_size``).

    Raises KeyError listing the valid names when ``name`` is not registered.
    """
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown embedding backend {name!r}; valid names: "
                       f"{', '.join(backend_names())}") from None
    return cls(**options)


@lru_cache(maxsize=None)
def _files_digest(paths: tuple[str, ...]) -> str:
    """Return the sha256 hex digest over the sha256 digests of ``paths``, in order."""
    combined = hashlib.sha256()
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        combined.update(digest.hexdigest().encode("ascii"))
    return combined.hexdigest()


@register_backend("dlib")
class DlibBackend(EmbeddingBackend):
    """dlib's ResNet face descriptor (128-D) on faces aligned by 5 landmarks.

    Per image: resize to ``DETECT_SIZE`` pixels square (bicubic), detect faces
    with dlib's HOG frontal face detector and keep the largest box, or use
    the whole frame when none is found. Then predict 5 landmarks, cut the
    aligned chip with ``dlib.get_face_chip`` and compute the descriptor. The
    descriptors are stored as the model outputs them, not L2-normalized.
    """

    dim = 128
    ALIGNMENT = "landmarks"
    DETECT_SIZE = 150
    CHIP_SIZE = 150
    CHIP_PADDING = 0.25
    # Times the detector upsamples the 150 px image. On the first 300 files of
    # a 6000-image CelebA sample after load_face (64 px), 0 and 1 both found a
    # face in 295 images. Upsampling 0 times took 2.4 ms per image and 1 time
    # 8.9 ms (measured on a 2-core CPU with dlib 20.0.1).
    UPSAMPLE = 0

    def __init__(self, image_size: int = IMAGE_SIZE):
        super().__init__(image_size)
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise StageError(
                f"the dlib embedding backend needs the packages dlib-bin and "
                f"face_recognition_models ({exc}); install them with "
                f"'pip install -r requirements.txt'") from exc
        descriptor_model = Path(face_recognition_models.face_recognition_model_location())
        landmark_model = Path(face_recognition_models.pose_predictor_five_point_model_location())
        for path in (descriptor_model, landmark_model):
            if not path.is_file():
                raise FileNotFoundError(f"dlib model file not found: {path}; reinstall "
                                        "face_recognition_models")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(landmark_model))
        self._descriptor = dlib.face_recognition_model_v1(str(descriptor_model))
        # Both weight files change the output, so the protocol hashes both.
        self._weights_hash = _files_digest((str(descriptor_model), str(landmark_model)))[:8]

    def protocol_name(self) -> str:
        return f"dlib-{self.ALIGNMENT}-{self.image_size}px-{self._weights_hash}"

    def _embed_valid(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[bool]]:
        chips, found = [], []
        for image in images:
            chip, face_found = self._align(image)
            chips.append(chip)
            found.append(face_found)
        # The descriptor network has no batch-dependent layers, so a list of
        # chips gives the same vectors as one call per chip (checked in the tests).
        vectors = self._descriptor.compute_face_descriptor(chips)
        return np.array([np.asarray(vector) for vector in vectors]), found

    def _align(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """Return the aligned ``CHIP_SIZE`` face chip of one image and whether a face was detected."""
        size = self.DETECT_SIZE
        interpolation = cv2.INTER_CUBIC if self.image_size < size else cv2.INTER_AREA
        resized = cv2.resize(image, (size, size), interpolation=interpolation)
        detections = self._detector(resized, self.UPSAMPLE)
        if len(detections) > 0:
            box = max(detections, key=lambda rect: rect.area())
            face_found = True
        else:
            box = self._dlib.rectangle(0, 0, size - 1, size - 1)
            face_found = False
        shape = self._landmarks(resized, box)
        chip = self._dlib.get_face_chip(resized, shape, size=self.CHIP_SIZE, padding=self.CHIP_PADDING)
        return chip, face_found
