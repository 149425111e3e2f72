#!/usr/bin/env python3
"""Hold out random test images as lists (the dataset folder is never modified),
or, with --db, build the image database that the comparison reads."""

from __future__ import annotations

import argparse
import logging

from study import presets, provenance
from study.cli import add_output_arguments, run_main, setup_logging
from study.layout import Layout

log = logging.getLogger("split_train_test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="folder of face images to split (read only)")
    parser.add_argument("--root", default="experiment",
                        help="experiment output folder (default: experiment)")
    presets.add_preset_argument(parser)
    parser.add_argument("--n_test", type=int, default=None,
                        help="number of held-out test images" + presets.preset_help("split", "n_test"))
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (default: 0)")
    parser.add_argument("--split-by-identity", dest="identity_file", metavar="FILE",
                        help="identity file with lines '<file name> <person id>' (CelebA: "
                             "identity_CelebA.txt); draws whole persons for the test set until "
                             "it has exactly --n_test images, so no person is on both sides")
    parser.add_argument("--db", action="store_true",
                        help="build imagesdb/<idx>/{original,masked,gen/<model>}.jpg from the "
                             "completions instead of splitting")
    parser.add_argument("--clipping", default="stochastic",
                        help="with --db: clipping of the completions to use (default: stochastic)")
    parser.add_argument("--maskType", default="center",
                        help="with --db: mask of the completions to use (default: center)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing split or database files that differ")
    add_output_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "split")
    layout = Layout(args.root)
    if args.db:
        from study.split import build_image_database

        completions = layout.completions("_", args.clipping, args.maskType).parent.parent
        counts = build_image_database(completions, layout.imagesdb, overwrite=args.overwrite)
        provenance.record(layout.imagesdb, "imagesdb", vars(args))
        log.info("image database in %s: %s", layout.imagesdb, counts)
        return 0
    if not args.data:
        raise ValueError("--data is required to split (the folder of face images)")
    from study.split import split_dataset

    result = split_dataset(args.data, layout.split_dir, layout.test_images, args.n_test,
                           args.seed, overwrite=args.overwrite, progress=args.progress,
                           identity_file=args.identity_file)
    if not result.reused:
        provenance.record(layout.split_dir, "split", vars(args))
    return 0


if __name__ == "__main__":
    run_main(main)
