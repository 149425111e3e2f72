#!/usr/bin/env python3
"""Train one GAN of the zoo on the TFRecords made by convert.py.

Checkpoints every --ckpt_step generator steps and resumes from the newest one
unless --renew; writes a sample grid from a fixed z at each checkpoint, losses
and the grid's spread across z every 10 steps (losses.csv and TensorBoard) and
the resolved config. A grid that hardly changes with z (mode collapse) is
reported as a warning.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from study import presets, provenance
from study.cli import add_output_arguments, run_main, setup_logging
from study.layout import Layout

log = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    from models import model_names

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="NAME",
                        help=f"GAN to train, one of: {', '.join(model_names())}")
    parser.add_argument("--root", default="experiment", help="experiment folder (default: experiment)")
    parser.add_argument("--tfrecords", help="TFRecord folder (default: <root>/tfrecords)")
    parser.add_argument("--checkpoint_dir", help="checkpoint folder (default: <root>/checkpoints/<model>)")
    presets.add_preset_argument(parser)

    def preset_int(name, text):
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=text + presets.preset_help("train", name))

    preset_int("batch_size", "images per batch")
    preset_int("epochs", "passes over the training images (used when --max_steps is 0)")
    preset_int("max_steps", "generator steps to run; 0 derives them from --epochs")
    preset_int("z_dim", "size of the latent z")
    preset_int("gf_dim", "generator width: the last hidden layer has 2*gf_dim channels")
    preset_int("df_dim", "discriminator width: the first layer has df_dim channels")
    preset_int("ckpt_step", "save a checkpoint and a sample grid every this many steps")
    preset_int("sample_count", "images in each sample grid")
    parser.add_argument("--log_every", type=int, default=10,
                        help="write losses, penalty, Wasserstein estimate, the critic's input "
                             "gradient norms (real, fake, interpolated) and the sample grid's "
                             "spread across z (sample_std) to losses.csv and TensorBoard every "
                             "this many steps; the norms and the spread cost a pass through the "
                             "critic and one through the generator, so 1 slows training down "
                             "(default: 10)")
    parser.add_argument("--keep_checkpoints", type=int, default=3,
                        help="newest checkpoints kept, older ones are removed; 0 keeps all (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs to train on: 0 or 1 uses TensorFlow's default device; N >= 2 "
                             "splits each global batch of --batch_size images evenly across the "
                             "first N GPUs (tf.distribute.MirroredStrategy); the update equals the "
                             "one-device update up to float rounding; not available for dcgan-gp, "
                             "dragan_bn and dcgan-cons (default: 0)")
    parser.add_argument("--renew", action="store_true",
                        help="start from scratch, deleting this model's earlier checkpoints, "
                             "samples and logs instead of resuming")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config, check it against the TFRecords and the "
                             "checkpoint folder, and exit without training")
    add_output_arguments(parser)
    return parser


def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "train", model=args.model)
    from models import get_spec
    from study.training import TrainConfig, train

    get_spec(args.model)  # unknown names fail here, listing the valid ones
    layout = Layout(args.root)
    config = TrainConfig(
        model=args.model,
        tfrecords=str(args.tfrecords or layout.tfrecords),
        checkpoint_dir=str(args.checkpoint_dir or layout.checkpoints(args.model)),
        batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
        z_dim=args.z_dim, gf_dim=args.gf_dim, df_dim=args.df_dim, ckpt_step=args.ckpt_step,
        log_every=args.log_every, sample_count=args.sample_count,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed, renew=args.renew, progress=args.progress, gpus=args.gpus)
    if args.dry_run:
        from study.training import plan

        print(config)
        outline = plan(config)
        if config.renew and Path(config.checkpoint_dir).exists():
            start = (f"would delete the checkpoints, samples and logs in {config.checkpoint_dir} "
                     "(--renew) and start from step 0")
        elif outline["start_step"] >= outline["steps"]:
            start = f"nothing to do: {outline['resume_from']} is at step {outline['start_step']}"
        elif outline["resume_from"]:
            start = f"would resume from {outline['resume_from']} (step {outline['start_step']})"
        else:
            start = f"would start from step 0 in {config.checkpoint_dir}"
        print(f"{outline['model']} ({outline['label']}): {outline['steps']} steps on "
              f"{outline['n_train_images']} images of {outline['image_size']}x{outline['image_size']} "
              f"in {config.tfrecords}; {start}")
        return 0
    summary = train(config)
    provenance.record(Path(config.checkpoint_dir), "train", {**vars(args), **summary})
    print(f"{summary['model']}: {summary['steps']} steps, checkpoint {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    run_main(main)
