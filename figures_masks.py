#!/usr/bin/env python3
"""Draw one test face completed under every mask: <root>/figures/masks.png.

Rows are the masks (every registered --maskType unless --masks is given);
columns are the original, the masked input (hidden pixels white), the
Poisson-blended completion and G(z). Under each blended tile are its L1
error (mean absolute error in [0, 255] units) and SSIM over the hidden
pixels. The completion uses complete.py's settings and defaults. The script
reads the trained checkpoint and the test images and writes only the PNG.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from study import presets
from study.cli import add_output_arguments, run_main, setup_logging
from study.layout import Layout

log = logging.getLogger("figures_masks")

COLUMNS = ("original", "masked", "blended", "G(z)")


def build_parser() -> argparse.ArgumentParser:
    from study.masks import mask_names

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained GAN to use (its --model name)")
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--checkpoint_dir", help="checkpoint folder (default: <root>/checkpoints/<model>)")
    parser.add_argument("--test_dir", help="folder of test images (default: <root>/split/test)")
    parser.add_argument("--index", type=int, default=0,
                        help="test image index, its position in the split's test list (default: 0)")
    parser.add_argument("--masks", nargs="+", choices=mask_names(), default=mask_names(),
                        help="masks to show, one row each (default: all)")
    parser.add_argument("--out", help="output PNG (default: <root>/figures/masks.png)")
    presets.add_preset_argument(parser)
    parser.add_argument("--iterations", type=int, default=None,
                        help="Adam iterations on z" + presets.preset_help("complete", "iterations"))
    parser.add_argument("--clipping", default="stochastic", choices=("stochastic", "standard"),
                        help="clipping of z after each step (default: stochastic)")
    parser.add_argument("--lam", type=float, default=0.003,
                        help="weight of the perceptual loss per image (default: 0.003)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate on z (default: 0.005)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting z, the clipping "
                                                            "and the random mask (default: 0)")
    add_output_arguments(parser, progress=False)
    return parser


def complete_under_masks(gan, face, index: int, masks: list[str], settings, iterations: int) -> list[dict]:
    """Complete ``face`` (uint8 ``[H, W, 3]``) once per mask; return one dict of tiles per mask."""
    import numpy as np

    from study.blend import overlay, poisson_blend
    from study.completion import HIDDEN_FILL
    from study.fill_quality import measure
    from study.images import to_uint8, to_unit_range
    from study.inpaint import LatentOptimizer, optimize_batch
    from study.masks import make_mask

    size = face.shape[0]
    optimizer = LatentOptimizer(gan, np.ones((size, size), np.float32), settings)
    rows = []
    for name in masks:
        known = make_mask(name, size, seed=settings.seed)
        optimizer.set_weights(known)
        z_best, _, _ = optimize_batch(optimizer, to_unit_range(face[None]), [index], iterations, 0)
        gz = to_uint8(gan.sample(z_best))[0]
        blended, method = poisson_blend(face, gz, known)
        quality = measure(face, blended, overlay(face, gz, known), known)
        masked = np.where(known[:, :, None] > 0.5, face, HIDDEN_FILL).astype(np.uint8)
        rows.append({"mask": name, "tiles": (face, masked, blended, gz), "method": method,
                     "l1": quality["l1_blended"], "ssim": quality["ssim_blended"]})
        log.info("mask %s: blending %s, L1 %.1f, SSIM %.3f", name, method,
                 quality["l1_blended"], quality["ssim_blended"])
    return rows


def draw(rows: list[dict], title: str, path: Path) -> None:
    """Write the grid of ``rows`` (one per mask) with column titles and mask names."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(COLUMNS), squeeze=False,
                                figsize=(1.7 * len(COLUMNS), 1.85 * len(rows) + 0.5))
    for row_index, row in enumerate(rows):
        for column, (label, tile) in enumerate(zip(COLUMNS, row["tiles"])):
            axis = axes[row_index][column]
            axis.imshow(tile, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(label, fontsize=9)
            if column == 0:
                axis.set_ylabel(row["mask"], fontsize=9)
            if label == "blended":
                caption = "nothing hidden" if math.isnan(row["l1"]) else \
                    f"L1 {row['l1']:.1f}  SSIM {row['ssim']:.2f}"
                if row["method"] != "poisson":
                    caption += f"\n({row['method']})"
                axis.set_xlabel(caption, fontsize=7)
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    tmp.replace(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "complete")

    from complete import list_test_images, load_model
    from study.images import load_face
    from study.inpaint import InpaintSettings

    layout = Layout(args.root)
    gan, meta, prep = load_model(args.model, layout, args.checkpoint_dir)
    test_dir, names = list_test_images(layout, args.test_dir)
    if not 0 <= args.index < len(names):
        raise ValueError(f"--index {args.index} is outside the {len(names)} test images (0 to "
                         f"{len(names) - 1})")
    face = load_face(test_dir / names[args.index], prep)
    settings = InpaintSettings(lam=args.lam, learning_rate=args.lr, clipping=args.clipping,
                               seed=args.seed)
    rows = complete_under_masks(gan, face, args.index, args.masks, settings, args.iterations)
    out = Path(args.out) if args.out else layout.figures / "masks.png"
    title = (f"{args.model} (step {meta['step']}), test image {args.index} ({names[args.index]}), "
             f"{args.iterations} iterations, {args.clipping} clipping, lam {args.lam}")
    draw(rows, title, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
