#!/usr/bin/env python3
"""Download the CelebA aligned images (img_align_celeba.zip), check the MD5 and
extract them; print the image folder to pass to split_train_test.py as --data.

An interrupted download resumes when the same command is run again."""

from __future__ import annotations

import argparse

from study.cli import add_output_arguments, run_main, setup_logging
from study.download import CELEBA_MD5, CELEBA_URL, DEFAULT_TIMEOUT_S, fetch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=CELEBA_URL,
                        help="archive URL, e.g. a lab mirror (default: the Google Drive file "
                             "linked from the CelebA project page)")
    parser.add_argument("--out", default="data",
                        help="folder for the archive and the extracted images (default: data)")
    parser.add_argument("--md5", default=CELEBA_MD5,
                        help=f"expected MD5 of the archive, or 'none' to skip the check "
                             f"(default: {CELEBA_MD5}, the official img_align_celeba.zip)")
    parser.add_argument("--filename",
                        help="file name of the archive in --out (default: the last part of the "
                             "URL path if it ends in .zip, .tar, .tar.gz or .tgz, otherwise "
                             "img_align_celeba.zip)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for the connection and for each read "
                             f"(default: {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty extracted folder (the archive is "
                             "reused if its MD5 matches)")
    add_output_arguments(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {args.timeout}")
    image_dir = fetch(args.url, args.out, args.md5, filename=args.filename,
                      overwrite=args.overwrite, progress=args.progress, timeout=args.timeout)
    print(image_dir)
    return 0


if __name__ == "__main__":
    run_main(main)
