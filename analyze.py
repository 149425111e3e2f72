#!/usr/bin/env python3
"""Summarize the study: figures of the per-image cosine distances and of the mean
distance and mean generalization gap per GAN (baselines as their own bars),
bootstrap 95% confidence intervals, paired tests between the GANs, and a
static HTML report.

Reads <root>/gan_distances.csv, every <root>/underfit/<model>/underfit.csv
(GANs and baseline_<name> folders) and, where present,
<root>/completions_<clipping>_<mask>/<model>/test/fill_quality.csv. Writes
<root>/results/summary.csv (n, mean, median, 95% CI per model and metric),
pairwise.csv (Wilcoxon signed-rank per GAN pair and metric, Holm-corrected,
with the matched-pairs rank-biserial effect size), friedman.csv,
<root>/figures/sim_distances.png and joint_bar.png, and
<root>/report/index.html.

--seeds groups model folders named <model>+seed<k> (train.py --checkpoint_dir
and complete.py --out choose the names) with <model> as training seeds of one
GAN. Between GANs, each image's value is then the mean over the GAN's seeds,
the seeds of one GAN are compared pairwise as well, and results/seeds.csv
puts the seed-to-seed spread of the means beside the spread between GANs.
"""

from __future__ import annotations

import argparse
import math

from study.cli import add_output_arguments, run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--resamples", type=int, default=10000,
                        help="bootstrap resamples per confidence interval (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument("--clipping", default=None, choices=("stochastic", "standard"),
                        help="clipping of the completions whose fill quality and images to show "
                             "(default: those the image database was built from, else stochastic)")
    parser.add_argument("--maskType", default=None,
                        help="mask of the completions whose fill quality and images to show "
                             "(default: that of the image database, else center)")
    parser.add_argument("--seeds", action="store_true",
                        help="group <model>+seed<k> folders with <model> as training seeds of one GAN")
    parser.add_argument("--report-only", dest="report_only", action="store_true",
                        help="only rebuild report/index.html from the existing results and images")
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="skip report/index.html")
    add_output_arguments(parser, progress=False)
    return parser


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _print_summary(result) -> None:
    width = max([len("model"), *(len(label) for label in result.summary["label"])])
    print(f"{'model':<{width}} {'n':>5} {'distance':>9} {'95% CI':>17} {'n':>5} {'gap':>8} {'95% CI':>17}")
    for row in result.summary.itertuples(index=False):
        distance_ci = f"[{_format(row.distance_ci_low)}, {_format(row.distance_ci_high)}]"
        gap_ci = f"[{_format(row.gap_ci_low)}, {_format(row.gap_ci_high)}]"
        print(f"{row.label:<{width}} {row.distance_n:>5} {_format(row.distance_mean):>9} {distance_ci:>17} "
              f"{row.gap_n:>5} {_format(row.gap_mean):>8} {gap_ci:>17}")
    for row in result.friedman.itertuples(index=False):
        if math.isnan(row.p_value):
            continue
        print(f"Friedman {row.comparison}, {row.metric}: chi2 = {row.statistic:.3f}, "
              f"p = {row.p_value:.3g} ({row.n_images} images, {row.n_models} models)")
    print(f"summary table: {result.summary_path}")
    print(f"pairwise:      {result.pairwise_path}")
    if result.seeds_path is not None:
        print(f"seed spread:   {result.seeds_path}")
    print(f"box plot:      {result.boxplot_path}")
    print(f"bar chart:     {result.bars_path}")
    if result.report_path is not None:
        print(f"report:        {result.report_path}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.report_only:
        from study.report import build_report

        print(f"report: {build_report(args.root, clipping=args.clipping, mask=args.maskType)}")
        return 0
    from study.analysis import run_analysis

    result = run_analysis(args.root, n_resamples=args.resamples, seed=args.seed, clipping=args.clipping,
                          mask=args.maskType, seeds=args.seeds, report=args.report)
    _print_summary(result)
    return 0


if __name__ == "__main__":
    run_main(main)
