#!/usr/bin/env python3
"""Inpaint the held-out test faces with a trained GAN by optimizing z (Yeh et al. 2017).

Writes completions_<clipping>_<mask>/<model>/test/<idx>/ under the experiment
folder. Images whose final outputs exist are skipped, so a killed run resumes
where it stopped; --start/--end select a range for SLURM arrays.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from study import presets, provenance
from study.cli import run_main, setup_logging
from study.layout import Layout

log = logging.getLogger("complete")


def build_parser() -> argparse.ArgumentParser:
    from study.masks import mask_names

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained GAN to use (its --model name)")
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--checkpoint_dir", help="checkpoint folder (default: <root>/checkpoints/<model>)")
    parser.add_argument("--test_dir", help="folder of test images (default: <root>/split/test)")
    parser.add_argument("--out", help="output folder (default: <root>/completions_<clipping>_<mask>/<model>/test)")
    presets.add_preset_argument(parser)
    parser.add_argument("--iterations", type=int, default=None,
                        help="Adam iterations on z" + presets.preset_help("complete", "iterations"))
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images optimized together" + presets.preset_help("complete", "batch_size"))
    parser.add_argument("--save_every", type=int, default=None,
                        help="save outputs every K iterations, 0 = only the final one; the final "
                             "iteration is always saved" + presets.preset_help("complete", "save_every"))
    parser.add_argument("--maskType", default="center", choices=mask_names(),
                        help="shape of the hidden region (default: center, the central 32x32 of 64x64)")
    parser.add_argument("--mask_file", help="PNG mask (white = known) instead of --maskType; "
                                            "outputs go to completions_<clipping>_<file stem>")
    parser.add_argument("--clipping", default="stochastic", choices=("stochastic", "standard"),
                        help="after each step, redraw (stochastic) or clip (standard) entries of z "
                             "outside [-1, 1] (default: stochastic)")
    parser.add_argument("--lam", type=float, default=0.003,
                        help="weight of the perceptual loss per image (default: 0.003)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate on z (default: 0.005)")
    parser.add_argument("--weighted_context", action="store_true",
                        help="importance-weighted context loss of Yeh et al. (7x7 window)")
    parser.add_argument("--restarts", type=int, default=1,
                        help="random starting z per image; the lowest final loss wins (default: 1)")
    parser.add_argument("--start", type=int, default=0, help="first test image index (default: 0)")
    parser.add_argument("--end", type=int, default=None, help="one past the last index (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting z and the clipping")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images that are already completed, replacing their outputs")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _check_earlier_settings(out_dir: Path, current: dict, overwrite: bool) -> None:
    path = out_dir / "completion_config.json"
    if overwrite or not path.exists():
        return
    earlier = json.loads(path.read_text())
    keys = ("settings", "iterations", "mask", "checkpoint")
    differing = [f"{k}: earlier {earlier.get(k)!r}, now {current.get(k)!r}"
                 for k in keys if earlier.get(k) != current.get(k)]
    if differing:
        raise ValueError(f"{out_dir} holds completions made with other settings ({'; '.join(differing)}). "
                         "Pass --overwrite to redo them, or choose another --out.")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "complete")

    from models import checkpoint, get_spec
    from models.gan import GAN, Sizes
    from study.completion import CompletionJob, complete_images
    import numpy as np

    from study.images import Preprocessing, save_rgb
    from study.inpaint import InpaintSettings
    from study.masks import importance_weights, load_mask_file, make_mask
    from study.provenance import write_json_atomic
    from study.split import read_split_list
    from study.tfrecords import read_manifest

    layout = Layout(args.root)
    get_spec(args.model)
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else layout.checkpoints(args.model)

    def factory(meta):
        if meta["model"] != args.model:
            raise checkpoint.CheckpointMismatch(
                f"checkpoint in {ckpt_dir} is a {meta['model']} model, but --model is {args.model}")
        return GAN(get_spec(meta["model"]),
                   Sizes(meta["z_dim"], meta["gf_dim"], meta["df_dim"], meta["image_size"]))

    gan, meta = checkpoint.load_for_inference(ckpt_dir, factory)
    prep_dict = read_manifest(layout.tfrecords)["preprocessing"] if (layout.tfrecords / "manifest.json").exists() \
        else Preprocessing().as_dict()
    prep = Preprocessing(**prep_dict)
    if prep.size != meta["image_size"]:
        raise ValueError(f"the generator makes {meta['image_size']}px images but the preprocessing "
                         f"is {prep.size}px")

    if args.mask_file:
        known = load_mask_file(args.mask_file, prep.size)
        mask_name = Path(args.mask_file).stem
    else:
        known = make_mask(args.maskType, prep.size, seed=args.seed)
        mask_name = args.maskType
    weights = importance_weights(known) if args.weighted_context else known

    settings = InpaintSettings(lam=args.lam, learning_rate=args.lr, clipping=args.clipping,
                               restarts=args.restarts, seed=args.seed)
    test_dir = Path(args.test_dir) if args.test_dir else layout.test_images
    names = tuple(read_split_list(layout.split_dir, "test")) if not args.test_dir else \
        tuple(sorted(p.name for p in test_dir.iterdir() if p.is_file()))
    out_dir = Path(args.out) if args.out else layout.completions(args.model, args.clipping, mask_name)
    job = CompletionJob(test_dir=str(test_dir), names=names, out_dir=str(out_dir),
                        iterations=args.iterations, batch_size=args.batch_size,
                        save_every=args.save_every, start=args.start, end=args.end,
                        overwrite=args.overwrite, progress=args.progress)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")

    current = {"settings": settings.__dict__, "iterations": args.iterations, "mask": mask_name,
               "weighted_context": args.weighted_context,
               "checkpoint": {"model": meta["model"], "step": meta["step"]}}
    _check_earlier_settings(out_dir, current, args.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "completion_config.json", {**current, "preprocessing": prep.as_dict()})
    mask_png = out_dir / "mask.png"
    if not mask_png.exists() or args.overwrite:
        save_rgb(mask_png, np.repeat((known * 255).astype(np.uint8)[:, :, None], 3, axis=2))
    provenance.record(out_dir, "complete", vars(args))

    summary = complete_images(gan, known, weights, settings, job, prep)
    print(f"{args.model}: completed {summary['completed']} image(s), "
          f"{summary['skipped']} already done or unreadable -> {out_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
