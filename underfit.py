#!/usr/bin/env python3
"""Measure whether each GAN's inpaintings resemble the test face or a training face.

For every test image, compares the face embedding of the final G(z) with
the test original and with its k nearest training faces (cosine distance).
The gap d(G(z), test) - d(G(z), nearest train) sorts images into
generalized (gap <= 0) and recall (gap > 0). Writes
<root>/underfit/<model>/underfit.csv and one mosaic per image, and prints
the mean gap per model.

--baselines also measures reference inpainters on the same test images,
with the same embedder and protocol, into <root>/underfit/baseline_<name>/:
  test          the test image itself (generalizing, gap = -d(test, nearest train))
  mix25/50/75   the hole filled with 25/50/75% of the nearest training image
                in pixel space and the rest from the test image
  copy          the hole filled with that training image (overfitting)
  train         the whole nearest training image (G(z) of a generator that
                memorized its training set)
The pixel-space search reads every training image once and caches its result
in <root>/baselines/nearest_pixels.csv. Use --model none to run only them.
The backend options (--embedder, --alignment, ...) embed the baseline images.
They must be those that made the train and test embeddings, because a
differing protocol name is rejected.

--identities FILE (CelebA: identity_CelebA.txt) adds the columns
test_identity, train_identity_1, same_identity and train_images_same_identity,
and prints how often the nearest training face shows the test image's person.
"""

from __future__ import annotations

import argparse
import math

from study.cli import add_output_arguments, run_main, setup_logging
from study.layout import Layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--model", default="all",
                        help="GAN whose inpaintings to measure, 'all' for every model with an "
                             "inpaint_<model>__<protocol>.npz embedding file, or 'none' to run "
                             "only --baselines (default: all)")
    parser.add_argument("--baselines", action="store_true",
                        help="also make, embed and measure the reference inpainters listed above")
    parser.add_argument("--identities", metavar="FILE",
                        help="identity file with lines '<file name> <person id>'; adds the "
                             "same-person columns and rate")
    parser.add_argument("--k", type=int, default=5,
                        help="training neighbours per image, shown in the mosaics (default: 5)")
    parser.add_argument("--chunk", type=int, default=20000,
                        help="training embeddings compared at a time; lower it to use less memory "
                             "(default: 20000)")
    parser.add_argument("--clipping", default="stochastic", choices=("stochastic", "standard"),
                        help="clipping of the completions to show (default: stochastic)")
    parser.add_argument("--maskType", default="center",
                        help="mask name (or mask file stem) of the completions to show; the "
                             "baselines read its mask.png or build this registered mask "
                             "(default: center)")
    parser.add_argument("--protocol",
                        help="embedding protocol, the part after '__' in the embedding file names; "
                             "required when several exist")
    from facenet.options import add_backend_arguments

    # With --baselines, these choose the backend that embeds the baseline
    # images. They must match the options that made the train and test
    # embeddings, which the protocol name in the file names checks.
    add_backend_arguments(parser)
    parser.add_argument("--pixel-match", dest="pixel_match", default="context",
                        choices=("context", "full"),
                        help="with --baselines: pixels compared to find the nearest training image, "
                             "the known ones an inpainter sees (context) or all (default: context)")
    parser.add_argument("--pixel-chunk", dest="pixel_chunk", type=int, default=1000,
                        help="with --baselines: training images decoded and compared at a time "
                             "(default: 1000, about 100 MB per 1000 test images)")
    parser.add_argument("--batch_size", type=int, default=64,
                        help="with --baselines: images per embedding call (default: 64)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier results made from other inputs")
    add_output_arguments(parser)
    return parser


def _models(args: argparse.Namespace, layout: Layout) -> list[str]:
    from study.underfit import INPAINT_PREFIX, embedding_command, inpaint_models

    if args.model == "none":
        if not args.baselines:
            raise ValueError("--model none measures nothing without --baselines")
        return []
    if args.model != "all":
        return [args.model]
    models = inpaint_models(layout.embeddings, args.protocol)
    if not models and not args.baselines:
        protocol = args.protocol or "<protocol>"
        raise FileNotFoundError(
            f"no inpainting embeddings found: no {layout.embeddings}/{INPAINT_PREFIX}<model>__{protocol}.npz. "
            f"Make them with: {embedding_command(args.root, INPAINT_PREFIX + 'MODEL')} "
            "for each trained MODEL")
    return models


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from study.underfit import UnderfitConfig, run_underfit

    results = []
    for model in _models(args, Layout(args.root)):
        config = UnderfitConfig(root=args.root, model=model, k=args.k, chunk=args.chunk,
                                clipping=args.clipping, mask=args.maskType, protocol=args.protocol,
                                identities=args.identities, overwrite=args.overwrite,
                                progress=args.progress)
        results.append(run_underfit(config))
    if args.baselines:
        from facenet.options import backend_from_args
        from study.baselines import BaselineConfig, run_baselines

        config = BaselineConfig(root=args.root, k=args.k, chunk=args.chunk, pixel_chunk=args.pixel_chunk,
                                clipping=args.clipping, mask=args.maskType, match=args.pixel_match,
                                protocol=args.protocol, embedder=args.embedder,
                                backend_factory=lambda prep: backend_from_args(args, prep),
                                batch_size=args.batch_size, identities=args.identities,
                                overwrite=args.overwrite, progress=args.progress)
        results.extend(run_baselines(config))

    same_person = " same person" if args.identities else ""
    print(f"{'model':<16} {'images':>6} {'excluded':>8} {'generalized':>11} {'recall':>6} "
          f"{'mean gap':>9}{same_person}  results")
    for result in results:
        note = " (already done)" if result.already_done else ""
        rate = ""
        if args.identities:
            share = "n/a" if math.isnan(result.same_identity_rate) else f"{100 * result.same_identity_rate:.1f}%"
            rate = f" {share:>11}"
        print(f"{result.model:<16} {result.n_images:>6} {result.n_excluded:>8} "
              f"{result.buckets['generalized']:>11} {result.buckets['recall']:>6} "
              f"{_format(result.mean_gap):>9}{rate}  {result.csv_path}{note}")
    if args.identities:
        print("same person: share of measured images whose nearest training face shows the test "
              "image's person (images with known identities only)")
    return 0


if __name__ == "__main__":
    run_main(main)
