#!/usr/bin/env python3
"""Compute face embeddings of the train or test images, or of a GAN's final G(z)
inpaintings, and write them to <root>/embeddings/<source>__<protocol>.npz.

All sources go through one protocol: the 64 px training crop of convert.py,
scaled up to the backend's input size, aligned and standardized. The protocol
name in each file name says which, and underfit.py compares only files of
one protocol."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python facenet/calculate_embeddings.py`, Python puts facenet/ first
# on the path, but the packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import logging  # noqa: E402

from facenet.inputs import (ExactSizeLoader, FaceLoader, FullResolutionLoader,  # noqa: E402
                            inpaint_items, inpaint_models, read_preprocessing, split_items)
from facenet.options import add_backend_arguments, backend_from_args  # noqa: E402
from facenet.store import embed_images, embedding_file  # noqa: E402
from study import presets, provenance  # noqa: E402
from study.cli import add_output_arguments, run_main, setup_logging  # noqa: E402
from study.layout import Layout  # noqa: E402

log = logging.getLogger("calculate_embeddings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="experiment",
                        help="experiment output folder (default: experiment)")
    parser.add_argument("--src", choices=("train", "test", "inpaint"), required=True,
                        help="images to embed: the split's train or test images (cropped as for "
                             "training) or the final G(z) of --gan (used as they are)")
    parser.add_argument("--gan", help="with --src inpaint: model folder name under the "
                                      "completions folder, or 'all' for every model found")
    add_backend_arguments(parser)
    parser.add_argument("--train_full_resolution", action="store_true",
                        help="with --src train: embed the training images whole, at full "
                             "resolution, instead of through the 64 px training crop. This "
                             "reproduces the study's setting, which compares full-resolution "
                             "training faces with 64 px inpaintings; it gives its own protocol "
                             "name, so underfit.py will not mix these files with 64 px ones "
                             "(default: off)")
    presets.add_preset_argument(parser)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images per embedding call" + presets.preset_help("embed", "batch_size"))
    parser.add_argument("--checkpoint_every", type=int, default=10,
                        help="save the partial embedding file every this many batches, so a "
                             "killed run resumes (default: 10)")
    parser.add_argument("--checkpoint_seconds", type=float, default=60.0,
                        help="save the partial embedding file at most once per this many "
                             "seconds, because every save rewrites the whole file (default: 60)")
    parser.add_argument("--clipping", default="stochastic",
                        help="with --src inpaint: clipping of the completions (default: stochastic)")
    parser.add_argument("--maskType", default="center",
                        help="with --src inpaint: mask of the completions (default: center)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute every embedding instead of reusing those already stored")
    add_output_arguments(parser)
    return parser


def plan_jobs(args: argparse.Namespace, layout: Layout, prep) -> list[tuple[str, list, object]]:
    """Return ``(source, items, loader)`` for every embedding file this run writes."""
    if args.train_full_resolution and args.src != "train":
        raise ValueError(f"--train_full_resolution applies only to --src train, not --src {args.src}")
    if args.src in ("train", "test"):
        if args.gan:
            raise ValueError(f"--gan applies only to --src inpaint, not --src {args.src}")
        loader = FullResolutionLoader() if args.train_full_resolution else FaceLoader(prep)
        return [(args.src, split_items(layout, args.src), loader)]
    if not args.gan:
        raise ValueError("--gan is required with --src inpaint: a model name or 'all'")
    if args.gan == "all":
        models = inpaint_models(layout, args.clipping, args.maskType)
    else:
        models = [args.gan]
    loader = ExactSizeLoader(prep.size)
    return [(f"inpaint_{model}", inpaint_items(layout, model, args.clipping, args.maskType), loader)
            for model in models]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    presets.apply_preset(args, "embed")
    layout = Layout(args.root)
    prep = read_preprocessing(layout)
    jobs = plan_jobs(args, layout, prep)
    backend = backend_from_args(args, None if args.train_full_resolution else prep)
    protocol = backend.protocol_name()
    log.info("embedding with protocol %s", protocol)
    if args.train_full_resolution:
        log.warning("--train_full_resolution: the training embeddings get protocol %s, which is "
                    "comparable only with other full-resolution embeddings", protocol)

    outputs = {}
    for source, items, loader in jobs:
        out_path = embedding_file(layout.embeddings, source, protocol)
        result = embed_images(items, backend, loader, out_path, source, loader.describe(),
                              batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
                              checkpoint_seconds=args.checkpoint_seconds, overwrite=args.overwrite,
                              progress=args.progress, workers=args.workers)
        outputs[source] = {"file": str(out_path), "images": len(result.embeddings),
                           "computed": result.computed, "reused": result.reused,
                           "unreadable": result.unreadable,
                           "face_not_found": int((~result.embeddings.face_found).sum())}
    provenance.record(layout.embeddings, "embeddings",
                      {**vars(args), "protocol": protocol, "preprocessing": prep.as_dict(),
                       "protocol_details": backend.protocol_details(), "outputs": outputs})
    return 0


if __name__ == "__main__":
    run_main(main)
