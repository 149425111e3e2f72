#!/usr/bin/env python3
"""Time the compiled training step of each GAN against a full train.py step.

For each model on the CPU preset sizes:

- bare: images per second of ``GAN.train_step`` on one batch held in memory;
- full: seconds per step of ``study.training.train`` (TFRecord input
  pipeline, loss logging every ``--log-every`` steps with input-gradient
  diagnostics, checkpoints and sample grids at the CPU preset's interval).
  It is measured between logged steps 10 and 10 + ``--steps``, so start-up
  is left out and, with the default 200 steps, one checkpoint falls inside.

The ratio full / bare is the overhead of everything around the step. This
machine is shared, so the bare step is timed once before and once after the
full run of each model, in the same process, and the ratio uses their mean.
The spread of the two bare blocks shows how much the load moved meanwhile.

    python benchmarks/train_step.py --data ../shared/celeba_sample --models dcgan wgan-gp
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


class BareStep:
    """A GAN of the preset's sizes and one batch in memory, to time ``train_step`` alone."""

    def __init__(self, model: str, sizes, batch_size: int, seed: int = 0):
        import tensorflow as tf

        from models import get_spec
        from models.gan import GAN

        spec = get_spec(model)
        self.gan = GAN(spec, sizes, seed=seed)
        self.real = tf.random.uniform([spec.n_critic, batch_size, sizes.image_size, sizes.image_size, 3],
                                      -1, 1, seed=1)
        for _ in range(3):  # tracing and warm-up
            self.step()

    def step(self) -> None:
        # float() forces the step to finish, as the training loop does for its non-finite check.
        {k: float(v) for k, v in self.gan.train_step(self.real).items()}

    def seconds_per_step(self, steps: int) -> float:
        began = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - began) / steps


def full_seconds_per_step(model: str, records: Path, work: Path, sizes, batch_size: int, steps: int,
                          ckpt_step: int, log_every: int) -> float:
    from study.training import TrainConfig, train

    folder = work / f"ckpt-{model}"
    config = TrainConfig(model=model, tfrecords=str(records), checkpoint_dir=str(folder),
                         batch_size=batch_size, epochs=0, max_steps=steps + 10, z_dim=sizes.z_dim,
                         gf_dim=sizes.gf_dim, df_dim=sizes.df_dim, ckpt_step=ckpt_step, log_every=log_every,
                         sample_count=64, seed=0, renew=True, progress=False)
    train(config)
    with open(folder / "losses.csv") as handle:
        rows = {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(handle)}
    # Step 10 onwards excludes tracing and the first fill of the input pipeline.
    return (rows[steps + 10] - rows[10]) / steps


def main(argv=None) -> int:
    from models import model_names

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of face images for the TFRecords")
    parser.add_argument("--models", nargs="+", default=model_names(), help="models to time (default: all)")
    parser.add_argument("--steps", type=int, default=200,
                        help="timed steps per measurement, a multiple of 10 (default: 200)")
    parser.add_argument("--images", type=int, default=1000, help="images converted for the pipeline")
    parser.add_argument("--bare-steps", dest="bare_steps", type=int, default=50,
                        help="steps per bare timing block; two blocks per model (default: 50)")
    parser.add_argument("--log-every", dest="log_every", type=int, default=10,
                        help="train.py --log_every of the full run (default: 10, as train.py)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    # The timing window runs from the logged step 10 to the logged step 10 + --steps.
    if 10 % args.log_every or args.steps % args.log_every:
        parser.error(f"--log-every {args.log_every} must divide 10 and --steps {args.steps}, "
                     "so that both ends of the timing window are logged")

    from models.gan import Sizes
    from study.images import Preprocessing, list_image_files
    from study.presets import PRESETS
    from study.tfrecords import convert

    preset = PRESETS["cpu"]["train"]
    sizes = Sizes(preset["z_dim"], preset["gf_dim"], preset["df_dim"], 64)
    batch = preset["batch_size"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, _ = list_image_files(args.data)
        convert(paths[: args.images], work / "records", n_shards=16, prep=Preprocessing(), progress=False)
        for model in args.models:
            from models import get_spec

            bare_step = BareStep(model, sizes, batch)
            before = bare_step.seconds_per_step(args.bare_steps)
            load = os.getloadavg()[0]
            full = full_seconds_per_step(model, work / "records", work, sizes, batch, args.steps,
                                         preset["ckpt_step"], args.log_every)
            after = bare_step.seconds_per_step(args.bare_steps)
            bare = (before + after) / 2
            images = batch * get_spec(model).n_critic
            row = {"model": model, "bare_s_per_step": bare, "bare_before_s": before,
                   "bare_after_s": after, "full_s_per_step": full, "bare_images_per_s": images / bare,
                   "ratio_full_to_bare": full / bare, "load_1min": load}
            results.append(row)
            print(f"{model:11s} bare {bare * 1000:7.1f} ms/step ({images / bare:6.1f} img/s; "
                  f"blocks {before * 1000:.0f}/{after * 1000:.0f})  full {full * 1000:7.1f} ms/step  "
                  f"ratio {full / bare:.3f}  load {load:.1f}", flush=True)
    print()
    print("| model | bare step (ms) | images/s (bare) | bare blocks before/after (ms) | "
          "full train.py step (ms) | full / bare | load |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['model']} | {row['bare_s_per_step'] * 1000:.1f} | {row['bare_images_per_s']:.1f} | "
              f"{row['bare_before_s'] * 1000:.0f} / {row['bare_after_s'] * 1000:.0f} | "
              f"{row['full_s_per_step'] * 1000:.1f} | {row['ratio_full_to_bare']:.3f} | "
              f"{row['load_1min']:.1f} |")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"python {platform.python_version()}")
    print(f"\nmachine: {machine}; median ratio "
          f"{np.median([r['ratio_full_to_bare'] for r in results]):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "machine": machine,
                                               "log_every": args.log_every, "results": results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
