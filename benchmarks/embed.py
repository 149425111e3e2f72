#!/usr/bin/env python3
"""Measure embedding throughput (images per second) of each backend on this machine.

For each backend and batch size (default 1 and 64) it times ``backend.embed``
on 64 px training crops of real CelebA faces, once with the backend's
alignment (dlib: landmarks, facenet: mtcnn) and once with ``--alignment
none``. It also times the alignment step alone, the whole pipeline of
calculate_embeddings.py for dlib (hash, decode, crop, embed, save) with 1
and 2 worker processes, and dlib in a pool of 1 and 2 processes after
start-up.

Without --model_path, the facenet backend runs a synthetic Inception-sized
graph: Keras' InceptionResNetV2 with random weights at 160 px, a 512-D dense
layer and L2 normalization, frozen with FaceNet's tensor names. Its speed is
of the order of FaceNet's Inception-ResNet-v1 (a smaller network), not that
model's exact speed.

    python benchmarks/embed.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from facenet.backends import get_backend  # noqa: E402
from facenet.inputs import FaceLoader  # noqa: E402
from facenet.store import ImageItem, embed_images  # noqa: E402
from study.images import Preprocessing, load_face  # noqa: E402

ALIGN_BATCH = 16
DEFAULT_CELEBA = Path(os.environ.get("CELEBA_SAMPLE", REPO.parent / "shared" / "celeba_sample"))


def build_inception_graph(path: Path, size: int = 160, dim: int = 512) -> Path:
    """Write a frozen random-weight InceptionResNetV2 graph with FaceNet's tensor names to ``path``."""
    import keras
    import tensorflow as tf
    # NOTE: a private TensorFlow module; the public API has no TF2 function freezer.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    trunk = keras.applications.InceptionResNetV2(weights=None, include_top=False,
                                                 input_shape=(size, size, 3), pooling="avg")
    head = keras.layers.Dense(dim)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="input"),
                                  tf.TensorSpec([], tf.bool, name="phase_train")])
    def forward(images, phase_train):
        features = head(trunk(images, training=False))
        features = tf.where(phase_train, features * 1.0, features)
        return tf.math.l2_normalize(features, axis=1, name="embeddings")

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path


def load_faces(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(folder.glob("*.jpg"))[:count]
    if len(files) < count:
        raise FileNotFoundError(f"need {count} .jpg faces in {folder}, found {len(files)}")
    return [load_face(path) for path in files]


def images_per_second(step, images: list[np.ndarray], batch_size: int) -> float:
    """Return images per second of ``step(batch)`` over ``images``, after one untimed batch."""
    step(images[:batch_size])
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        step(images[first:first + batch_size])
    return len(images) / (time.perf_counter() - start)


def time_backend(label: str, make_backend, faces: list[np.ndarray], batch_sizes: list[int],
                 single_count: int) -> list[dict]:
    rows = []
    for alignment in make_backend.alignments:
        backend = make_backend(alignment)
        for batch_size in batch_sizes:
            images = faces if batch_size > 1 else faces[:single_count]
            rate = images_per_second(backend.embed, images, batch_size)
            rows.append({"backend": label, "alignment": alignment, "batch_size": batch_size,
                         "step": "align + embed", "images": len(images), "images_per_s": rate})
            print(rows[-1], flush=True)
        if alignment != "none":
            align = make_backend.align_only(backend)
            rate = images_per_second(align, faces, ALIGN_BATCH)
            rows.append({"backend": label, "alignment": alignment, "batch_size": ALIGN_BATCH,
                         "step": "align only", "images": len(faces), "images_per_s": rate})
            print(rows[-1], flush=True)
    return rows


class DlibFactory:
    alignments = ("landmarks", "none")

    def __call__(self, alignment: str):
        return get_backend("dlib", preprocessing=Preprocessing(), alignment=alignment)

    @staticmethod
    def align_only(backend):
        return lambda batch: [backend._align(image) for image in batch]


class FaceNetFactory:
    alignments = ("mtcnn", "none")

    def __init__(self, model_path: Path, standardization: str):
        self.model_path = model_path
        self.standardization = standardization

    def __call__(self, alignment: str):
        return get_backend("facenet", preprocessing=Preprocessing(), model_path=self.model_path,
                           alignment=alignment, standardization=self.standardization)

    @staticmethod
    def align_only(backend):
        return backend.model_inputs


def time_pipeline(folder: Path, count: int, worker_counts: list[int], batch_size: int) -> list[dict]:
    """Time embed_images for dlib on ``count`` CelebA files, as calculate_embeddings.py runs it.

    The time includes starting the worker processes and loading dlib in each.
    """
    items = [ImageItem(key=path.name, path=path) for path in sorted(folder.glob("*.jpg"))[:count]]
    loader = FaceLoader(Preprocessing())
    backend = get_backend("dlib", preprocessing=Preprocessing())
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers in worker_counts:
            start = time.perf_counter()
            embed_images(items, backend, loader, Path(scratch) / f"workers{workers}.npz", "bench",
                         loader.describe(), batch_size=batch_size, progress=False,
                         workers=workers)
            rate = len(items) / (time.perf_counter() - start)
            rows.append({"backend": "dlib", "alignment": "landmarks", "batch_size": batch_size,
                         "step": f"embed_images, {workers} worker(s), with start-up",
                         "images": len(items), "images_per_s": rate})
            print(rows[-1], flush=True)
    return rows


_pool_backend = None


def _start_pool_process() -> None:
    global _pool_backend
    _pool_backend = get_backend("dlib", preprocessing=Preprocessing())


def _embed_in_pool(batch: list[np.ndarray]) -> np.ndarray:
    return _pool_backend.embed(batch)[0]


def time_processes(faces: list[np.ndarray], process_counts: list[int], repeats: int) -> list[dict]:
    """Time dlib on ``faces`` in pools of each process count, after start-up, alternating the counts.

    Returns the median images per second of ``repeats`` runs per count.
    Alternating the counts spreads changes in the load of a shared machine
    over all of them.
    """
    import multiprocessing
    import statistics

    batches = [faces[first:first + 8] for first in range(0, len(faces), 8)]
    context = multiprocessing.get_context("spawn")
    pools = {count: context.Pool(count, initializer=_start_pool_process) for count in process_counts}
    rates: dict[int, list[float]] = {count: [] for count in process_counts}
    try:
        for count, pool in pools.items():
            pool.map(_embed_in_pool, [batches[0][:1]] * count)
        for _ in range(repeats):
            for count, pool in pools.items():
                start = time.perf_counter()
                pool.map(_embed_in_pool, batches)
                rates[count].append(len(faces) / (time.perf_counter() - start))
    finally:
        for pool in pools.values():
            pool.terminate()
    rows = []
    for count in process_counts:
        rows.append({"backend": "dlib", "alignment": "landmarks", "batch_size": 8,
                     "step": f"{count} process(es), median of {repeats}, after start-up",
                     "images": len(faces), "images_per_s": statistics.median(rates[count]),
                     "runs": rates[count]})
        print(rows[-1], flush=True)
    return rows


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": cpu, "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "uptime": uptime}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--celeba", type=Path, default=DEFAULT_CELEBA,
                        help=f"folder of CelebA .jpg faces (default: {DEFAULT_CELEBA})")
    parser.add_argument("--images", type=int, default=64,
                        help="faces timed per batch size above 1 (default: 64)")
    parser.add_argument("--single_images", type=int, default=16,
                        help="faces timed at batch size 1 (default: 16)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 64],
                        help="batch sizes to time (default: 1 64)")
    parser.add_argument("--backends", nargs="+", default=["dlib", "facenet"],
                        choices=("dlib", "facenet"), help="backends to time (default: both)")
    parser.add_argument("--model_path", type=Path,
                        help="FaceNet .pb or checkpoint folder; default: a synthetic "
                             "InceptionResNetV2 graph built in a temporary folder")
    parser.add_argument("--standardization", default="prewhiten", choices=("fixed", "prewhiten"),
                        help="facenet standardization (default: prewhiten)")
    parser.add_argument("--pipeline_images", type=int, default=128,
                        help="files for the dlib embed_images timing; 0 to skip (default: 128)")
    parser.add_argument("--pipeline_workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts for the embed_images timing (default: 1 2)")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2],
                        help="process counts for the dlib pool timing; none to skip "
                             "(default: 1 2)")
    parser.add_argument("--process_repeats", type=int, default=4,
                        help="timed runs per process count (default: 4)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)

    info = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "before": machine()}
    print(info["before"], flush=True)
    faces = load_faces(args.celeba, max(args.images, args.single_images))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        if "dlib" in args.backends:
            rows += time_backend("dlib", DlibFactory(), faces[:args.images], args.batch_sizes,
                                 args.single_images)
        if "facenet" in args.backends:
            model_path = args.model_path
            label = f"facenet ({model_path})" if model_path else "facenet (synthetic InceptionResNetV2)"
            if model_path is None:
                model_path = build_inception_graph(Path(scratch) / "inception.pb")
            rows += time_backend(label, FaceNetFactory(model_path, args.standardization),
                                 faces[:args.images], args.batch_sizes, args.single_images)
    if args.pipeline_images:
        rows += time_pipeline(args.celeba, args.pipeline_images, args.pipeline_workers,
                              batch_size=16)
    if args.processes:
        rows += time_processes(faces[:args.images], args.processes, args.process_repeats)
    info["after"] = machine()
    info["results"] = rows

    print("\n| backend | alignment | step | batch | images | images/s |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['backend']} | {row['alignment']} | {row['step']} | {row['batch_size']} | "
              f"{row['images']} | {row['images_per_s']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
