"""Registry of face-embedding backends.

A backend maps a list of uint8 RGB images to float32 embeddings ``[N, dim]``
and a flag per image that is True when a face was detected. Its inputs are
the ``preprocessing`` crop of the training data (``size`` pixels square), or
full-resolution images of any size when ``preprocessing`` is None. The backend
scales them to its model's input size, aligns the face and runs the model.
Backends register under a name with :func:`register_backend`, and
:func:`get_backend` builds one by name.

The protocol name of a backend lists everything that changes its vectors:
backend, alignment, standardization, image preprocessing, model input size
and a hash of the weight files. Embeddings are comparable only when their
protocol names are equal.
"""

from __future__ import annotations

import abc
import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from facenet.alignment import STANDARDIZATIONS, MtcnnAligner, resize_to, scale_short_side, standardize
from study.errors import StageError
from study.images import Preprocessing

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "dlib"
FULL_RESOLUTION = "fullres"


def images_token(preprocessing: Preprocessing | None) -> str:
    """Return the protocol-name part that describes how images were read.

    ``crop0.780488-64px`` is the central 64/82 of the short edge resized to
    64 px, as convert.py stores training images, and ``fullres`` is the
    whole decoded image at its own size.
    """
    if preprocessing is None:
        return FULL_RESOLUTION
    return f"crop{preprocessing.crop_fraction:.6g}-{preprocessing.size}px"


class EmbeddingBackend(abc.ABC):
    """Base class of embedding backends, which implement ``_embed_valid``.

    Subclasses set ``dim``, ``input_size`` (the model's input side in pixels)
    and ``weights_hash`` in ``__init__``, because :meth:`protocol_name` names
    them. ``embed`` checks the inputs, so ``_embed_valid`` receives a
    non-empty list of C-contiguous uint8 RGB arrays.
    """

    name: str = ""
    dim: int = 0
    # Alignments a backend offers; the first one is its default.
    alignments: tuple[str, ...] = ("none",)
    standardizations: tuple[str, ...] = ()

    def __init__(self, preprocessing: Preprocessing | None = Preprocessing(),
                 alignment: str | None = None, standardization: str | None = None):
        self.preprocessing = preprocessing
        self.image_size = None if preprocessing is None else preprocessing.size
        self.alignment = self._choose("alignment", alignment, self.alignments)
        if self.standardizations or standardization is not None:
            self.standardization = self._choose("standardization", standardization,
                                                self.standardizations)
        else:
            self.standardization = ""
        self.input_size = 0
        self.weights_hash = ""
        # Set by get_backend, so worker processes can build the same backend.
        self.build_options: dict | None = None

    def _choose(self, label: str, value: str | None, valid: tuple[str, ...]) -> str:
        if value is None:
            return valid[0]
        if value not in valid:
            raise ValueError(f"invalid --{label} {value!r} for the {self.name} backend; valid: "
                             f"{', '.join(valid) or 'none (the option does not apply)'}")
        return value

    def protocol_name(self) -> str:
        """Return the id of backend, alignment, standardization, images, input size and weights."""
        parts = [self.name, self.alignment, self.standardization, images_token(self.preprocessing),
                 f"in{self.input_size}px", self.weights_hash]
        return "-".join(part for part in parts if part)

    def protocol_details(self) -> dict:
        """Return the parts of the protocol name as a dict, for provenance records."""
        return {"protocol": self.protocol_name(), "backend": self.name, "alignment": self.alignment,
                "standardization": self.standardization or None,
                "images": images_token(self.preprocessing), "input_size": self.input_size,
                "weights_sha256_prefix": self.weights_hash, "dim": self.dim}

    @abc.abstractmethod
    def _embed_valid(self, images: list[np.ndarray]) -> tuple[np.ndarray, Sequence[bool]]:
        """Embed checked images and return ``(vectors [N, dim], face_found [N])``."""

    def embed(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Embed ``images`` and return float32 ``[N, dim]`` and bool ``face_found [N]``.

        Raises ValueError naming the position of an image that is not uint8
        RGB of ``image_size`` x ``image_size`` pixels (of any size of at least
        8 pixels when the backend reads full-resolution images).
        """
        checked = [self._check_image(position, image) for position, image in enumerate(images)]
        if not checked:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        vectors, found = self._embed_valid(checked)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(checked), self.dim)
        return vectors, np.asarray(found, dtype=bool).reshape(len(checked))

    def _check_image(self, position: int, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if self.image_size is None:
            valid = image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 \
                and min(image.shape[:2]) >= 8
            expected = "uint8 [H, W, 3] RGB of at least 8 pixels per side"
        else:
            expected_shape = (self.image_size, self.image_size, 3)
            valid = image.dtype == np.uint8 and image.shape == expected_shape
            expected = f"uint8 {expected_shape} RGB"
        if not valid:
            raise ValueError(
                f"image {position} of the batch has shape {image.shape} and dtype {image.dtype}; "
                f"the {self.name} backend with image_size={self.image_size} expects {expected} "
                "(decode with study.images.decode_rgb or load_face)")
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
    """Build the backend registered as ``name`` with ``options`` (such as ``preprocessing``).

    ``image_size=N`` is accepted in place of ``preprocessing`` and means
    ``Preprocessing(size=N)`` with the default crop fraction. Raises KeyError
    listing the valid names when ``name`` is not registered.
    """
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown embedding backend {name!r}; valid names: "
                       f"{', '.join(backend_names())}") from None
    if "image_size" in options:
        if "preprocessing" in options:
            raise ValueError("pass either image_size or preprocessing to get_backend, not both")
        options["preprocessing"] = Preprocessing(size=options.pop("image_size"))
    backend = cls(**options)
    backend.build_options = dict(options)
    return backend


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
    """dlib's ResNet face descriptor (128-D).

    Per image: scale to ``DETECT_SIZE`` pixels on the short side (bicubic when
    enlarging). With ``landmarks`` alignment, detect faces with dlib's HOG
    frontal face detector and keep the largest box, or use the whole frame
    when none is found. Then predict 5 landmarks, cut the aligned chip with
    ``dlib.get_face_chip`` and compute the descriptor. With ``none``, the
    whole image resized to ``CHIP_SIZE`` square is the chip and no face is
    detected. The descriptors are stored as the model outputs them, not
    L2-normalized.
    """

    dim = 128
    alignments = ("landmarks", "none")
    DETECT_SIZE = 150
    CHIP_SIZE = 150
    CHIP_PADDING = 0.25
    # Times the detector upsamples the 150 px image. On the first 300 files of
    # a 6000-image CelebA sample after load_face (64 px), 0 and 1 both found a
    # face in 295 images. Upsampling 0 times took 2.4 ms per image and 1 time
    # 8.9 ms (measured on a 2-core CPU with dlib 20.0.1).
    UPSAMPLE = 0

    def __init__(self, preprocessing: Preprocessing | None = Preprocessing(),
                 alignment: str | None = None):
        super().__init__(preprocessing, alignment)
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
        self.input_size = self.DETECT_SIZE
        # Both weight files change the output, so the protocol hashes both.
        self.weights_hash = _files_digest((str(descriptor_model), str(landmark_model)))[:8]

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
        """Return the ``CHIP_SIZE`` face chip of one image and whether a face was detected."""
        if self.alignment == "none":
            return resize_to(image, self.CHIP_SIZE, self.CHIP_SIZE), False
        frame = scale_short_side(image, self.DETECT_SIZE)
        detections = self._detector(frame, self.UPSAMPLE)
        if len(detections) > 0:
            box = max(detections, key=lambda rect: rect.area())
            face_found = True
        else:
            height, width = frame.shape[:2]
            box = self._dlib.rectangle(0, 0, width - 1, height - 1)
            face_found = False
        shape = self._landmarks(frame, box)
        chip = self._dlib.get_face_chip(frame, shape, size=self.CHIP_SIZE, padding=self.CHIP_PADDING)
        return chip, face_found


@register_backend("facenet")
class FaceNetBackend(EmbeddingBackend):
    """A FaceNet graph given as a frozen ``.pb`` file or a checkpoint folder (see facenet.graph_model).

    Per batch: align each image to the graph's input size (``mtcnn``: crop
    around the face MTCNN finds, see facenet.alignment.MtcnnAligner;
    ``none``: resize the whole image), standardize the pixels (``fixed`` or
    ``prewhiten``, see facenet.alignment.standardize) and run the graph with
    ``phase_train`` False. With ``none`` no detector runs, so ``face_found``
    is False for every image. Vectors are stored as the graph outputs them
    (FaceNet's are L2-normalized).
    """

    alignments = ("mtcnn", "none")
    standardizations = STANDARDIZATIONS

    def __init__(self, preprocessing: Preprocessing | None = Preprocessing(),
                 model_path: str | Path | None = None, alignment: str | None = None,
                 standardization: str | None = None, input_size: int | None = None):
        super().__init__(preprocessing, alignment, standardization)
        if model_path is None:
            raise ValueError("the facenet backend needs --model_path: a FaceNet frozen graph "
                             "(.pb) or checkpoint folder (see docs/EMBEDDINGS.md)")
        from facenet.graph_model import GraphModel

        self._model = GraphModel(model_path, input_size)
        self.dim = self._model.dim
        self.input_size = self._model.input_size
        files = list(self._model.files)
        self._aligner = None
        if self.alignment == "mtcnn":
            self._aligner = MtcnnAligner(self.input_size)
            files.extend(MtcnnAligner.weight_files())
        self.weights_hash = _files_digest(tuple(str(path) for path in files))[:8]

    def model_inputs(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[bool]]:
        """Return the aligned uint8 model inputs ``[N, S, S, 3]`` and whether a face was found."""
        size = self.input_size
        if self._aligner is not None:
            crops, found = self._aligner.align(images)
        else:
            crops, found = [resize_to(image, size, size) for image in images], [False] * len(images)
        return np.stack(crops), found

    def _embed_valid(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[bool]]:
        crops, found = self.model_inputs(images)
        return self._model(standardize(crops, self.standardization)), found
