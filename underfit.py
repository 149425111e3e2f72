#!/usr/bin/env python3
"""Measure whether each GAN's inpaintings resemble the test face or a training face.

For every test image, compares the face embedding of the final G(z) with
the test original and with its k nearest training faces (cosine distance).
The gap d(G(z), test) - d(G(z), nearest train) sorts images into
generalized (gap <= 0) and recall (gap > 0). Writes
<root>/underfit/<model>/underfit.csv and one mosaic per image, and prints
the mean gap per model.
"""

from __future__ import annotations

import argparse
import math

from study.cli import run_main, setup_logging
from study.layout import Layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--model", default="all",
                        help="GAN whose inpaintings to measure, or 'all' for every model with an "
                             "inpaint_<model>__<protocol>.npz embedding file (default: all)")
    parser.add_argument("--k", type=int, default=5,
                        help="training neighbours per image, shown in the mosaics (default: 5)")
    parser.add_argument("--chunk", type=int, default=20000,
                        help="training embeddings compared at a time; lower it to use less memory "
                             "(default: 20000)")
    parser.add_argument("--clipping", default="stochastic", choices=("stochastic", "standard"),
                        help="clipping of the completions to show (default: stochastic)")
    parser.add_argument("--maskType", default="center",
                        help="mask name (or mask file stem) of the completions to show (default: center)")
    parser.add_argument("--protocol",
                        help="embedding protocol, the part after '__' in the embedding file names; "
                             "required when several exist")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier results made from other inputs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from study.underfit import INPAINT_PREFIX, UnderfitConfig, embedding_command, inpaint_models, run_underfit

    layout = Layout(args.root)
    if args.model == "all":
        models = inpaint_models(layout.embeddings, args.protocol)
        if not models:
            protocol = args.protocol or "<protocol>"
            raise FileNotFoundError(
                f"no inpainting embeddings found: no {layout.embeddings}/{INPAINT_PREFIX}<model>__{protocol}.npz. "
                f"Make them with: {embedding_command(args.root, INPAINT_PREFIX + 'MODEL')} "
                "for each trained MODEL")
    else:
        models = [args.model]

    results = []
    for model in models:
        config = UnderfitConfig(root=args.root, model=model, k=args.k, chunk=args.chunk,
                                clipping=args.clipping, mask=args.maskType, protocol=args.protocol,
                                overwrite=args.overwrite, progress=args.progress)
        results.append(run_underfit(config))

    print(f"{'model':<16} {'images':>6} {'excluded':>8} {'generalized':>11} {'recall':>6} "
          f"{'mean gap':>9}  results")
    for result in results:
        mean_gap = "n/a" if math.isnan(result.mean_gap) else f"{result.mean_gap:.4f}"
        note = " (already done)" if result.already_done else ""
        print(f"{result.model:<16} {result.n_images:>6} {result.n_excluded:>8} "
              f"{result.buckets['generalized']:>11} {result.buckets['recall']:>6} {mean_gap:>9}  "
              f"{result.csv_path}{note}")
    return 0


if __name__ == "__main__":
    run_main(main)
