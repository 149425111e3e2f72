"""Sharded TFRecords of preprocessed faces and the training input pipeline.

Each record stores the uint8 pixels with their shape and source file name;
the pipeline scales pixels to [-1, 1] (x / 127.5 - 1) when it reads them.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study.images import Preprocessing, UnreadableImage, load_face
from study.provenance import read_json, sha256_lines, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTIAL = ".convert_partial.json"  # shards of a conversion that has not written its manifest yet
SHARD_GLOB = "train-*-of-*.tfrecord"


def _load_or_none(args):
    path, prep = args
    try:
        return load_face(path, prep)
    except UnreadableImage:
        return None


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Split ``range(n_items)`` into ``n_shards`` contiguous, near-equal, non-empty ranges."""
    if n_items < 1:
        raise ValueError("cannot shard zero images")
    n_shards = max(1, min(n_shards, n_items))
    edges = np.linspace(0, n_items, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def convert(paths: list[Path], out_dir: str | Path, n_shards: int = 128,
            prep: Preprocessing = Preprocessing(), overwrite: bool = False,
            progress: bool = True) -> dict:
    """Write ``paths`` as TFRecord shards plus ``manifest.json`` into ``out_dir``.

    Unreadable files are skipped and listed in the manifest. An existing
    conversion of the same file list and preprocessing is reused; a
    different one raises FileExistsError unless ``overwrite``.
    """
    import tensorflow as tf

    out_dir = Path(out_dir)
    names_hash = sha256_lines(str(p) for p in paths)
    manifest_path = out_dir / MANIFEST
    if manifest_path.exists():
        old = read_json(manifest_path)
        same = old.get("source_sha256") == names_hash and old.get("preprocessing") == prep.as_dict()
        if same and not overwrite:
            log.info("TFRecords in %s already hold these %d images; nothing to do",
                     out_dir, old["n_images"])
            return old
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} already contains TFRecords of other images or preprocessing; "
                "pass --overwrite to replace them, or choose another --out")
    partial_path = out_dir / PARTIAL
    ours = set(read_json(partial_path).get("shards", [])) if partial_path.exists() else set()
    if not manifest_path.exists() and not overwrite:
        foreign = sorted(p.name for p in out_dir.glob(SHARD_GLOB) if p.name not in ours)
        if foreign:
            raise FileExistsError(
                f"{out_dir} contains shards that convert.py did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}) and no {MANIFEST}. Choose another --out, "
                "or pass --overwrite to let shards of the same name be replaced.")
    if not paths:
        raise ValueError("no images to convert: the image list is empty")
    if manifest_path.exists():
        # Remove only the shards that the earlier conversion listed, because other
        # files in the folder may belong to someone else.
        for shard in old.get("shards", []):
            (out_dir / shard["file"]).unlink(missing_ok=True)
        manifest_path.unlink()

    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        faces = list(tqdm(pool.map(_load_or_none, [(p, prep) for p in paths]), total=len(paths),
                          desc="decoding", unit="img", disable=not progress))
    kept = [(p, f) for p, f in zip(paths, faces) if f is not None]
    skipped = [str(p) for p, f in zip(paths, faces) if f is None]
    if skipped:
        log.warning("skipped %d unreadable file(s): %s", len(skipped), ", ".join(skipped))
    if not kept:
        raise ValueError(f"none of the {len(paths)} files decoded as an image")
    if n_shards > len(kept):
        log.warning("%d shards requested for %d images; writing %d shards (one image each)",
                    n_shards, len(kept), len(kept))

    shards = []
    bounds = shard_bounds(len(kept), n_shards)
    names = [f"train-{index:05d}-of-{len(bounds):05d}.tfrecord" for index in range(len(bounds))]
    # The marker names every shard this conversion may leave behind, so a
    # rerun after a kill recognizes them as its own and replaces them.
    write_json_atomic(partial_path, {"shards": sorted(ours | set(names))})
    for name, (start, stop) in zip(names, bounds):
        tmp = out_dir / f".{name}.tmp"
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for path, face in kept[start:stop]:
                writer.write(_example(face, Path(path).name).SerializeToString())
        os.replace(tmp, out_dir / name)
        shards.append({"file": name, "count": stop - start})

    manifest = {
        "n_images": len(kept),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_input": len(paths),
        "shards": shards,
        "preprocessing": prep.as_dict(),
        "source_sha256": names_hash,
    }
    write_json_atomic(manifest_path, manifest)
    for stale in ours - set(names):
        (out_dir / stale).unlink(missing_ok=True)
    partial_path.unlink()
    log.info("wrote %d images in %d shards to %s", len(kept), len(shards), out_dir)
    return manifest


def _example(face: np.ndarray, name: str):
    import tensorflow as tf

    def int64(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def raw(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    height, width, channels = face.shape
    return tf.train.Example(features=tf.train.Features(feature={
        "image": raw(face.tobytes()),
        "height": int64(height),
        "width": int64(width),
        "channels": int64(channels),
        "filename": raw(name.encode("utf-8")),
    }))


def read_manifest(tfrecord_dir: str | Path) -> dict:
    path = Path(tfrecord_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(
            f"no TFRecords found: {path} is missing. Run convert.py first.")
    return read_json(path)


def check_batch_size(manifest: dict, batch_size: int, tfrecord_dir: str | Path) -> None:
    """Raise ValueError when one batch needs more images than the TFRecords contain."""
    if manifest["n_images"] < batch_size:
        raise ValueError(f"batch size {batch_size} is larger than the {manifest['n_images']} "
                         f"training images in {tfrecord_dir}; lower --batch_size")


def parse_record(serialized):
    """Parse one record into float32 ``[H, W, 3]`` pixels in [-1, 1]."""
    import tensorflow as tf

    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "channels": tf.io.FixedLenFeature([], tf.int64),
    })
    pixels = tf.io.decode_raw(features["image"], tf.uint8)
    shape = tf.stack([features["height"], features["width"], features["channels"]])
    image = tf.reshape(pixels, tf.cast(shape, tf.int32))
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def training_dataset(tfrecord_dir: str | Path, batch_size: int, seed: int,
                     group: int = 1, image_size: int | None = None):
    """Return an endless, shuffled dataset of ``[group, B, H, W, 3]`` batches in [-1, 1].

    ``group`` batches are stacked so a step that needs several fresh batches
    (5 critic steps) gets them in one call.
    """
    import tensorflow as tf

    manifest = read_manifest(tfrecord_dir)
    size = image_size or manifest["preprocessing"]["size"]
    files = [str(Path(tfrecord_dir) / shard["file"]) for shard in manifest["shards"]]
    check_batch_size(manifest, batch_size, tfrecord_dir)
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 4))
    dataset = dataset.map(parse_record, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda x: tf.ensure_shape(x, [size, size, 3]))
    # Decoded 64x64 faces are small (12 KiB), so cache them after the first pass.
    dataset = dataset.cache()
    dataset = dataset.shuffle(min(manifest["n_images"], 20000), seed=seed,
                              reshuffle_each_iteration=True)
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)
    dataset = dataset.batch(group, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
