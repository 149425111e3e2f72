#!/usr/bin/env python3
"""Summarize the study: a box plot of per-image cosine distances, bars of the mean
distance and mean generalization gap per GAN with bootstrap 95% confidence
intervals, and results/summary.csv.

Reads <root>/gan_distances.csv and every <root>/underfit/<model>/underfit.csv.
"""

from __future__ import annotations

import argparse
import math

from study.cli import run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--resamples", type=int, default=10000,
                        help="bootstrap resamples per confidence interval (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from study.analysis import run_analysis

    result = run_analysis(args.root, n_resamples=args.resamples, seed=args.seed)
    print(f"{'GAN':<14} {'n':>5} {'distance':>9} {'95% CI':>17} {'n':>5} {'gap':>8} {'95% CI':>17}")
    for row in result.summary.itertuples(index=False):
        distance_ci = f"[{_format(row.distance_ci_low)}, {_format(row.distance_ci_high)}]"
        gap_ci = f"[{_format(row.gap_ci_low)}, {_format(row.gap_ci_high)}]"
        print(f"{row.label:<14} {row.distance_n:>5} {_format(row.distance_mean):>9} {distance_ci:>17} "
              f"{row.gap_n:>5} {_format(row.gap_mean):>8} {gap_ci:>17}")
    print(f"summary table: {result.summary_path}")
    print(f"box plot:      {result.boxplot_path}")
    print(f"bar chart:     {result.bars_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
