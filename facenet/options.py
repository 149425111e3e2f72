"""Command-line options that choose and configure an embedding backend, shared by both scripts."""

from __future__ import annotations

import argparse

from facenet.alignment import STANDARDIZATIONS
from facenet.backends import DEFAULT_BACKEND, EmbeddingBackend, backend_names, get_backend
from study.images import Preprocessing

# Options that only the facenet backend takes.
_FACENET_OPTIONS = ("model_path", "standardization", "input_size")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", choices=backend_names(), default=DEFAULT_BACKEND,
                        help=f"embedding backend (default: {DEFAULT_BACKEND})")
    parser.add_argument("--model_path",
                        help="with --embedder facenet: FaceNet frozen graph (.pb) or checkpoint "
                             "folder (.meta, .index and .data files), see docs/EMBEDDINGS.md")
    parser.add_argument("--standardization", choices=STANDARDIZATIONS,
                        help="with --embedder facenet: pixel scaling before the graph; 'fixed' is "
                             "(x - 127.5) / 128, 'prewhiten' subtracts each image's mean and "
                             "divides by its standard deviation, as the study did (default: fixed)")
    parser.add_argument("--alignment",
                        help="face alignment before the model: 'landmarks' or 'none' for dlib "
                             "(default: landmarks), 'mtcnn' or 'none' for facenet (default: mtcnn)")
    parser.add_argument("--input_size", type=int,
                        help="with --embedder facenet: model input side in pixels, only for a "
                             "graph whose input shape does not fix it")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that embed batches in parallel, each loading its own copy "
                             "of the model. dlib keeps one core busy per process, so 2 workers on "
                             "2 free cores embed about 1.8 times as fast (default: 1)")


def backend_from_args(args: argparse.Namespace,
                      preprocessing: Preprocessing | None) -> EmbeddingBackend:
    """Build the backend chosen by ``args`` for images read with ``preprocessing``.

    Raises ValueError when a facenet-only option is given for another backend.
    """
    options = {"preprocessing": preprocessing}
    if args.alignment is not None:
        options["alignment"] = args.alignment
    for name in _FACENET_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if args.embedder != "facenet":
            raise ValueError(f"--{name} applies only to --embedder facenet, not --embedder "
                             f"{args.embedder}")
        options[name] = value
    return get_backend(args.embedder, **options)
