#!/usr/bin/env python3
"""Time the inpainting engine against a per-iteration Python loop and a bare gradient pass.

Three ways to run the same Adam-on-z optimization of one batch with the
center mask, each timed over the same number of iterations:

  python loop  one compiled loss-and-gradient call per iteration from Python,
               Adam on z in NumPy and the stochastic clipping element by
               element in a Python loop, as a per-iteration TF1 session
               loop runs. With --eager the same loop also runs with an
               eager (uncompiled) loss-and-gradient call.
  engine       study.inpaint.LatentOptimizer.run: all iterations in one
               compiled loop
  bare pass    a compiled in-graph loop of forward and backward passes
               through G and D with a plain gradient step on z: the work
               the engine cannot avoid

The sides run alternately --repeats times so load changes on a shared
machine hit all of them, and the medians are printed. Tracing happens
before timing. The networks have the CPU preset sizes (z 100, gf_dim 16,
df_dim 16, 64x64), freshly initialized unless --checkpoint_dir is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dcgan", help="GAN of the zoo (default: dcgan)")
    parser.add_argument("--checkpoint_dir", help="restore this trained checkpoint instead of a fresh GAN")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch (default: 64)")
    parser.add_argument("--iterations", type=int, default=50,
                        help="Adam iterations timed per run, the same for every side (default: 50)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating timed runs of each side; medians are reported (default: 3)")
    parser.add_argument("--eager", action="store_true",
                        help="also time the Python loop with an eager loss-and-gradient call")
    parser.add_argument("--jit_compile", action="store_true",
                        help="also time the engine and the bare pass compiled with XLA (jit_compile=True)")
    return parser


def load_gan(model: str, checkpoint_dir: str | None):
    from models import checkpoint, get_spec
    from models.gan import GAN, Sizes

    if checkpoint_dir is None:
        return GAN(get_spec(model), Sizes(z_dim=100, gf_dim=16, df_dim=16, image_size=64), seed=0)
    gan, _ = checkpoint.load_for_inference(
        checkpoint_dir, lambda meta: GAN(get_spec(meta["model"]), Sizes(
            meta["z_dim"], meta["gf_dim"], meta["df_dim"], meta["image_size"])))
    return gan


class PythonLoop:
    """Adam on z in NumPy around one compiled loss-and-gradient call per iteration."""

    def __init__(self, optimizer, eager: bool = False):
        import tensorflow as tf

        self.settings = optimizer.settings

        def loss_and_gradient(z, images):
            z = tf.convert_to_tensor(z)
            with tf.GradientTape() as tape:
                tape.watch(z)
                total, _, _ = optimizer.losses(z, images)
                objective = tf.reduce_sum(total)
            return objective, tape.gradient(objective, z)

        self.loss_and_gradient = loss_and_gradient if eager else tf.function(loss_and_gradient)

    def run(self, z, images, iterations: int, seed: int = 0) -> np.ndarray:
        s = self.settings
        rng = np.random.default_rng(seed)
        z = np.array(z, dtype=np.float32)
        m = np.zeros_like(z)
        v = np.zeros_like(z)
        for step in range(1, iterations + 1):
            _, grad = self.loss_and_gradient(z, images)
            grad = grad.numpy()
            m = s.beta_1 * m + (1 - s.beta_1) * grad
            v = s.beta_2 * v + (1 - s.beta_2) * grad * grad
            m_hat = m / (1 - s.beta_1 ** step)
            v_hat = v / (1 - s.beta_2 ** step)
            z = z - s.learning_rate * m_hat / (np.sqrt(v_hat) + s.epsilon)
            rows, cols = z.shape
            for i in range(rows):
                for j in range(cols):
                    if z[i, j] > 1.0 or z[i, j] < -1.0:
                        z[i, j] = rng.uniform(-1.0, 1.0)
        return z


def make_bare_pass(gan, jit_compile: bool):
    """Compiled loop of G and D forward and backward passes with a plain step on z."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def bare(z, iterations):
        for _ in tf.range(iterations):
            with tf.GradientTape() as tape:
                tape.watch(z)
                logits = gan.discriminator(gan.generator(z, training=False), training=False)
                objective = tf.reduce_sum(logits)
            z = z - 1e-4 * tape.gradient(objective, z)
        return z

    return bare


def time_call(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import tensorflow as tf

    from study.inpaint import InpaintSettings, LatentOptimizer, initial_latents
    from study.masks import make_mask

    gan = load_gan(args.model, args.checkpoint_dir)
    size = gan.sizes.image_size
    settings = InpaintSettings()
    optimizer = LatentOptimizer(gan, make_mask("center", size), settings)
    target_z = np.random.default_rng(1).uniform(-1, 1, (args.batch_size, gan.sizes.z_dim))
    images = tf.constant(gan.sample(target_z.astype(np.float32)))
    z0 = tf.constant(initial_latents(range(args.batch_size), gan.sizes.z_dim, seed=0))
    zeros = tf.zeros_like(z0)
    step0 = tf.constant(0, tf.int32)
    count = tf.constant(args.iterations, tf.int32)

    python_loop = PythonLoop(optimizer)
    bare = make_bare_pass(gan, jit_compile=False)
    sides = {
        "python loop": lambda: python_loop.run(z0.numpy(), images, args.iterations),
        "engine": lambda: optimizer.run(z0, zeros, zeros, step0, images, count)[0].numpy(),
        "bare pass": lambda: bare(z0, count).numpy(),
    }

    if args.eager:
        eager_loop = PythonLoop(optimizer, eager=True)
        sides["python loop (eager)"] = lambda: eager_loop.run(z0.numpy(), images, args.iterations)
    if args.jit_compile:
        jit_optimizer = LatentOptimizer(gan, make_mask("center", size), settings)
        jit_optimizer.run = tf.function(LatentOptimizer.run.python_function.__get__(jit_optimizer),
                                        jit_compile=True, reduce_retracing=True, autograph=False)
        jit_bare = make_bare_pass(gan, jit_compile=True)
        sides["engine (XLA)"] = lambda: jit_optimizer.run(z0, zeros, zeros, step0, images,
                                                          count)[0].numpy()
        sides["bare pass (XLA)"] = lambda: jit_bare(z0, count).numpy()

    # Trace and warm up every side once before timing.
    warm_count = tf.constant(2, tf.int32)
    python_loop.run(z0.numpy(), images, 2)
    if args.eager:
        eager_loop.run(z0.numpy(), images, 2)
    optimizer.run(z0, zeros, zeros, step0, images, warm_count)
    bare(z0, warm_count)
    if args.eager:
        eager_loop = PythonLoop(optimizer, eager=True)
        sides["python loop (eager)"] = lambda: eager_loop.run(z0.numpy(), images, args.iterations)
    if args.jit_compile:
        jit_optimizer.run(z0, zeros, zeros, step0, images, warm_count)
        jit_bare(z0, warm_count)

    seconds = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, function in sides.items():
            seconds[name].append(time_call(function))
        print(f"run {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {args.iterations / seconds[name][-1]:.1f} it/s" for name in sides), flush=True)

    rate = {name: args.iterations / statistics.median(values) for name, values in seconds.items()}
    print(f"\n{args.model}, batch {args.batch_size}, {args.iterations} iterations, "
          f"median of {args.repeats} runs, {tf.config.threading.get_intra_op_parallelism_threads()} "
          f"intra-op threads (0 = all cores):")
    for name in sides:
        print(f"  {name:20s} {rate[name]:8.2f} it/s   {1000 / rate[name]:8.2f} ms/it")
    print(f"  engine / python loop speed-up:           {rate['engine'] / rate['python loop']:.2f}x")
    if args.eager:
        print(f"  engine / eager python loop speed-up:     "
              f"{rate['engine'] / rate['python loop (eager)']:.2f}x")
    print(f"  engine iteration / bare pass time ratio: {rate['bare pass'] / rate['engine']:.2f}")
    if args.jit_compile:
        print(f"  XLA engine iteration / bare pass ratio:  {rate['bare pass'] / rate['engine (XLA)']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
