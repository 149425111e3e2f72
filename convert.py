#!/usr/bin/env python3
"""Convert the training images of a split to sharded TFRecords of 64x64 faces."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from study import provenance
from study.cli import add_output_arguments, run_main, setup_logging
from study.images import DEFAULT_CROP_FRACTION, IMAGE_SIZE, Preprocessing, list_image_files
from study.layout import Layout

log = logging.getLogger("convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="experiment",
                        help="experiment output folder (default: experiment)")
    parser.add_argument("--data", help="image folder; default: the folder recorded by the split")
    parser.add_argument("--list", dest="file_list",
                        help="text file of image names to convert (default: <root>/split/train.txt); "
                             "'all' converts every image in --data")
    parser.add_argument("--out", help="output folder (default: <root>/tfrecords)")
    parser.add_argument("--shards", type=int, default=128,
                        help="number of TFRecord shards, capped at the number of images "
                             "(default: 128, as the study)")
    parser.add_argument("--crop_fraction", type=float, default=DEFAULT_CROP_FRACTION,
                        help="central fraction of the square crop kept before resizing "
                             "(default: 64/82, the study's zoom; 1 keeps the whole square)")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE, help="output side in pixels (default: 64)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards an earlier convert.py run wrote in --out "
                             "(other files there are kept)")
    add_output_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.shards < 1:
        raise ValueError(f"--shards must be at least 1, got {args.shards}")
    layout = Layout(args.root)
    data_dir = Path(args.data) if args.data else None
    if args.file_list == "all":
        if data_dir is None:
            raise ValueError("--list all needs --data")
        paths, _ = list_image_files(data_dir)
    else:
        list_path = Path(args.file_list) if args.file_list else layout.split_dir / "train.txt"
        if not list_path.exists():
            raise FileNotFoundError(f"image list not found: {list_path}. Run split_train_test.py "
                                    "first, or pass --list all --data DIR.")
        if data_dir is None:
            manifest = layout.split_dir / "manifest.json"
            if not manifest.exists():
                raise FileNotFoundError(f"{manifest} is missing; pass --data")
            data_dir = Path(provenance.read_json(manifest)["data_dir"])
        paths = [data_dir / name for name in list_path.read_text().split()]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} listed image(s) not found, first: {missing[0]}")
    if not paths:
        raise ValueError(f"no images to convert in {data_dir}")

    from study.tfrecords import convert

    out = Path(args.out) if args.out else layout.tfrecords
    prep = Preprocessing(size=args.size, crop_fraction=args.crop_fraction)
    manifest = convert(paths, out, args.shards, prep, overwrite=args.overwrite,
                       progress=args.progress)
    provenance.record(out, "convert", vars(args))
    print(f"{manifest['n_images']} images in {len(manifest['shards'])} shards, "
          f"{manifest['n_skipped']} skipped -> {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
