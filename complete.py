#!/usr/bin/env python3
"""Inpaint the held-out test faces with a trained GAN by optimizing z (Yeh et al. 2017).

Writes completions_<clipping>_<mask>/<model>/test/<idx>/ under the experiment
folder, plus fill_quality.csv there: per image, the L1 error (mean absolute
error in [0, 255] units), PSNR and SSIM of the blended and the overlay
completion against the original over the hidden pixels, and the blending
method used (poisson, or overlay when no pixel is hidden or none is known).
Images whose final outputs exist are skipped, so a killed run resumes where
it stopped; --start/--end select a range for SLURM arrays.

--mode latent searches for the z whose G(z) reproduces the whole test image
(for memorization tests): the mask is forced to 'full', --lam defaults to 0
so only the pixel loss counts, nothing is blended, and each image folder
holds only original.jpg, gz/gz_<iteration>.jpg and z.npz in
completions_<clipping>_full/<model>/test. No fill_quality.csv is written.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from study import presets, provenance
from study.cli import add_output_arguments, run_main, setup_logging
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
    parser.add_argument("--mode", default="inpaint", choices=("inpaint", "latent"),
                        help="inpaint: fill the hidden region; latent: find the z that reproduces "
                             "the whole image, with the full mask and no blending (default: inpaint)")
    parser.add_argument("--maskType", default=None, choices=mask_names(),
                        help="shape of the hidden region (default: center, the central 32x32 of "
                             "64x64; always full in latent mode)")
    parser.add_argument("--mask_file", help="PNG mask (white = known) instead of --maskType; "
                                            "outputs go to completions_<clipping>_<file stem>")
    parser.add_argument("--clipping", default="stochastic", choices=("stochastic", "standard"),
                        help="after each step, redraw (stochastic) or clip (standard) entries of z "
                             "outside [-1, 1] (default: stochastic)")
    parser.add_argument("--lam", type=float, default=None,
                        help="weight of the perceptual loss per image (default: 0.003 in inpaint "
                             "mode, 0 in latent mode)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate on z (default: 0.005)")
    parser.add_argument("--blend", default="poisson", choices=("poisson", "opencv"),
                        help="blending of G(z) into the hole: 'poisson' solves the Poisson equation "
                             "with every known pixel as boundary (default); 'opencv' is the study's "
                             "seamlessClone, which keeps the original's pixels on the hole's outer ring")
    parser.add_argument("--weighted_context", action="store_true",
                        help="importance-weighted context loss of Yeh et al. (7x7 window)")
    parser.add_argument("--restarts", type=int, default=1,
                        help="random starting z per image; the lowest final loss wins (default: 1)")
    parser.add_argument("--start", type=int, default=0, help="first test image index (default: 0)")
    parser.add_argument("--end", type=int, default=None, help="one past the last index (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting z and the clipping")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo images that are already completed, replacing their outputs")
    add_output_arguments(parser)
    return parser


# Settings that must match to resume; the value assumed for configs written
# before the setting was recorded.
_RESUME_KEYS = {"settings": None, "iterations": None, "mask": None, "checkpoint": None,
                "test_images": None,
                "mode": "inpaint", "weighted_context": False, "blend": "poisson"}


def _check_earlier_settings(out_dir: Path, current: dict, overwrite: bool) -> None:
    path = out_dir / "completion_config.json"
    if overwrite or not path.exists():
        return
    earlier = provenance.read_json(path)
    differing = provenance.describe_differences(
        {key: earlier.get(key, absent) for key, absent in _RESUME_KEYS.items()},
        {key: current.get(key) for key in _RESUME_KEYS})
    if differing:
        raise ValueError(f"{out_dir} contains completions made with other settings ({'; '.join(differing)}). "
                         "Pass --overwrite to redo them, or choose another --out.")


def _apply_mode(args: argparse.Namespace) -> None:
    """Fill the mask and --lam defaults of --mode and reject options that contradict it."""
    if args.mode == "latent":
        if args.mask_file or args.maskType not in (None, "full"):
            given = f"--mask_file {args.mask_file}" if args.mask_file else f"--maskType {args.maskType}"
            raise ValueError(f"--mode latent always uses the full mask, but {given} was given; "
                             "drop it or use --mode inpaint")
        if args.weighted_context:
            raise ValueError("--weighted_context weighs known pixels next to hidden ones, and "
                             "--mode latent hides none; drop one of the two options")
        args.maskType = "full"
        args.lam = 0.0 if args.lam is None else args.lam
    else:
        args.maskType = args.maskType or "center"
        args.lam = 0.003 if args.lam is None else args.lam


def load_model(model: str, layout: Layout, checkpoint_dir: str | None):
    """Restore the newest checkpoint of ``model``; return ``(gan, meta, preprocessing)``.

    Raises CheckpointMismatch when the checkpoint is another model, and
    ValueError when its image size differs from the experiment's preprocessing.
    """
    from models import checkpoint, get_spec
    from models.gan import GAN, Sizes
    from study.images import Preprocessing
    from study.tfrecords import read_manifest

    get_spec(model)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else layout.checkpoints(model)

    def factory(meta):
        if meta["model"] != model:
            raise checkpoint.CheckpointMismatch(
                f"checkpoint in {ckpt_dir} is a {meta['model']} model, but --model is {model}")
        return GAN(get_spec(meta["model"]),
                   Sizes(meta["z_dim"], meta["gf_dim"], meta["df_dim"], meta["image_size"]))

    gan, meta = checkpoint.load_for_inference(ckpt_dir, factory)
    prep_dict = read_manifest(layout.tfrecords)["preprocessing"] if (layout.tfrecords / "manifest.json").exists() \
        else Preprocessing().as_dict()
    prep = Preprocessing(**prep_dict)
    if prep.size != meta["image_size"]:
        raise ValueError(f"the checkpoint in {ckpt_dir} makes {meta['image_size']}x{meta['image_size']} "
                         f"images, but this experiment's faces are {prep.size}x{prep.size} "
                         f"(preprocessing in {layout.tfrecords / 'manifest.json'}); use a checkpoint "
                         "trained on this experiment's faces")
    return gan, meta, prep


def list_test_images(layout: Layout, test_dir: str | None) -> tuple[Path, tuple]:
    """Return the test image folder and its file names, in test-index order.

    Without ``test_dir`` the names come from the split's ``test.txt``;
    with it, they are the sorted file names in that folder.
    """
    from study.split import read_split_list

    if test_dir is None:
        return layout.test_images, tuple(read_split_list(layout.split_dir, "test"))
    folder = Path(test_dir)
    return folder, tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "complete")
    _apply_mode(args)

    import numpy as np

    from study.completion import CompletionJob, complete_images
    from study.images import save_rgb
    from study.inpaint import InpaintSettings
    from study.masks import importance_weights, load_mask_file, make_mask
    from study.provenance import sha256_file, sha256_lines, write_json_atomic

    layout = Layout(args.root)
    gan, meta, prep = load_model(args.model, layout, args.checkpoint_dir)

    if args.mask_file:
        known = load_mask_file(args.mask_file, prep.size)
        mask_name = Path(args.mask_file).stem
    else:
        known = make_mask(args.maskType, prep.size, seed=args.seed)
        mask_name = args.maskType
    weights = importance_weights(known) if args.weighted_context else known

    settings = InpaintSettings(lam=args.lam, learning_rate=args.lr, clipping=args.clipping,
                               restarts=args.restarts, seed=args.seed)
    test_dir, names = list_test_images(layout, args.test_dir)
    out_dir = Path(args.out) if args.out else layout.completions(args.model, args.clipping, mask_name)
    job = CompletionJob(test_dir=str(test_dir), names=names, out_dir=str(out_dir),
                        iterations=args.iterations, batch_size=args.batch_size,
                        save_every=args.save_every, start=args.start, end=args.end,
                        overwrite=args.overwrite, progress=args.progress, mode=args.mode,
                        blend=args.blend)
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")

    current = {"settings": settings.__dict__, "iterations": args.iterations, "mask": mask_name,
               "mode": args.mode, "weighted_context": args.weighted_context, "blend": args.blend,
               # The hash distinguishes a retrained model from the one the earlier
               # completions came from, even when both stopped at the same step.
               "checkpoint": {"model": meta["model"], "step": meta["step"],
                              "sha256": sha256_file(meta["path"])},
               # A new split renumbers the test images; completions of the old
               # list must not be taken for the new one.
               "test_images": sha256_lines(names)}
    _check_earlier_settings(out_dir, current, args.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "completion_config.json", {**current, "preprocessing": prep.as_dict()})
    mask_png = out_dir / "mask.png"
    if not mask_png.exists() or args.overwrite:
        save_rgb(mask_png, np.repeat((known * 255).astype(np.uint8)[:, :, None], 3, axis=2))
    provenance.record(out_dir, "complete", vars(args))

    summary = complete_images(gan, known, weights, settings, job, prep)
    blending = ", ".join(f"{name} {count}" for name, count in sorted(summary["methods"].items()))
    print(f"{args.model}: completed {summary['completed']} image(s), "
          f"{summary['skipped']} already done or unreadable"
          + (f" (final blending: {blending})" if args.mode == "inpaint" and blending else "")
          + f" -> {out_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
