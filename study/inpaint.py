"""Semantic inpainting by optimizing the latent z (Yeh et al., CVPR 2017).

For images x ``[B, H, W, 3]`` in [-1, 1] and a mask M (1 = known), each
image's loss is

    L(z) = sum_pixels |W * (G(z) - x)|  +  lam * perceptual(z)

where W is M (or the importance weights of Yeh et al. eq. 2) and the
perceptual term is that image's own generator loss against the
discriminator, so neither term depends on the batch size. Adam updates z
and out-of-range entries are clipped after every step; all of it runs inside
one compiled loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

CLIPPINGS = ("stochastic", "standard")


@dataclass(frozen=True)
class InpaintSettings:
    lam: float = 0.003
    learning_rate: float = 0.005
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    clipping: str = "stochastic"
    restarts: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.clipping not in CLIPPINGS:
            raise ValueError(f"unknown clipping {self.clipping!r}; valid: {', '.join(CLIPPINGS)}")
        if self.restarts < 1:
            raise ValueError(f"--restarts must be at least 1, got {self.restarts}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"--lam must be a finite number >= 0, got {self.lam}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.learning_rate}")
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"Adam {name} must lie in [0, 1), got {value}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"Adam epsilon must be a finite number > 0, got {self.epsilon}")


def clip_latent(z, clipping: str, seed):
    """Bring z back into [-1, 1].

    ``standard`` clips each entry; ``stochastic`` redraws only the entries
    outside [-1, 1] from U(-1, 1) (stateless, from the int32 pair ``seed``).
    """
    if clipping == "standard":
        return tf.clip_by_value(z, -1.0, 1.0)
    redraw = tf.random.stateless_uniform(tf.shape(z), seed=seed, minval=-1.0, maxval=1.0)
    return tf.where(tf.abs(z) > 1.0, redraw, z)


class LatentOptimizer:
    """Compiled Adam on z for a fixed generator, discriminator and mask weights."""

    def __init__(self, gan, weights: np.ndarray, settings: InpaintSettings):
        self.gan = gan
        self.settings = settings
        # [1, H, W, 1] so one mask serves every image and channel. A variable,
        # so set_weights switches masks without retracing the compiled loop.
        self.weights = tf.Variable(self._expand(weights), trainable=False, name="mask_weights")

    @staticmethod
    def _expand(weights: np.ndarray) -> np.ndarray:
        return np.asarray(weights, np.float32)[None, :, :, None]

    def set_weights(self, weights: np.ndarray) -> None:
        """Use another mask (or importance weights) ``[H, W]`` of the same size from now on."""
        self.weights.assign(self._expand(weights))

    def losses(self, z, images):
        """Per-image ``(total, contextual, perceptual)`` losses, each ``[B]``."""
        generated = self.gan.generator(z, training=False)
        contextual = tf.reduce_sum(tf.abs(self.weights * (generated - images)), axis=[1, 2, 3])
        logits = self.gan.discriminator(generated, training=False)
        perceptual = self.gan.g_loss_per_sample(logits)
        return contextual + self.settings.lam * perceptual, contextual, perceptual

    def objective(self, z, images):
        """Sum of the per-image total losses, the quantity Adam minimizes.

        With ``lam == 0`` the discriminator cannot change it, so its forward
        and backward passes are left out of the compiled loop.
        """
        if self.settings.lam == 0:
            generated = self.gan.generator(z, training=False)
            return tf.reduce_sum(tf.abs(self.weights * (generated - images)))
        total, _, _ = self.losses(z, images)
        return tf.reduce_sum(total)

    @tf.function(reduce_retracing=True, autograph=False)
    def run(self, z, m, v, step, images, iterations):
        """Run ``iterations`` Adam steps from state ``(z, m, v, step)``; return the new state.

        ``step`` counts the Adam steps taken so far (for bias correction and
        the clipping seed), so calling this in chunks gives the same result
        as one long call. The loop is an explicit ``tf.while_loop`` traced
        without AutoGraph, which would spend seconds converting the code.
        """
        s = self.settings

        def adam_step(count, z, m, v, step):
            with tf.GradientTape() as tape:
                tape.watch(z)
                objective = self.objective(z, images)
            grad = tape.gradient(objective, z)
            step = step + 1
            m = s.beta_1 * m + (1.0 - s.beta_1) * grad
            v = s.beta_2 * v + (1.0 - s.beta_2) * tf.square(grad)
            t = tf.cast(step, tf.float32)
            m_hat = m / (1.0 - tf.pow(s.beta_1, t))
            v_hat = v / (1.0 - tf.pow(s.beta_2, t))
            z = z - s.learning_rate * m_hat / (tf.sqrt(v_hat) + s.epsilon)
            z = clip_latent(z, s.clipping, tf.stack([tf.constant(s.seed, tf.int32), step]))
            return count + 1, z, m, v, step

        _, z, m, v, step = tf.while_loop(lambda count, *_: count < iterations, adam_step,
                                         (tf.constant(0, tf.int32), z, m, v, step))
        return z, m, v, step

    @tf.function(reduce_retracing=True, autograph=False)
    def _compiled_losses(self, z, images):
        return self.losses(z, images)

    def evaluate(self, z, images):
        """Per-image ``(total, contextual, perceptual)`` losses as NumPy arrays ``[B]``."""
        total, contextual, perceptual = self._compiled_losses(tf.convert_to_tensor(z, tf.float32),
                                                              tf.convert_to_tensor(images, tf.float32))
        return total.numpy(), contextual.numpy(), perceptual.numpy()


def initial_latents(indices, z_dim: int, seed: int, restarts: int = 1) -> np.ndarray:
    """U(-1, 1) starting points ``[len(indices) * restarts, z_dim]``.

    Restart ``r`` of image ``i`` is drawn from the seed ``(seed, i, r)`` alone,
    so a run split into ranges (a SLURM array), batched differently or
    resumed after a kill starts every image from the same z.
    """
    rows = [np.random.default_rng([seed, int(i), r]).uniform(-1.0, 1.0, z_dim)
            for i in indices for r in range(restarts)]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), z_dim)


def optimize_batch(optimizer: LatentOptimizer, images: np.ndarray, indices,
                   iterations: int, save_every: int, on_checkpoint=None):
    """Inpaint one batch; return ``(z_best, losses_all, best_restart)``.

    ``images`` is float32 ``[B, H, W, 3]`` in [-1, 1] and ``indices`` their
    test-set indices, which seed the starting z. With R restarts the
    batch holds R candidate z per image; the one with the lowest final loss
    is kept and all final losses ``[B, R]`` are returned. ``on_checkpoint(i,
    z_best)`` is called at every ``save_every``-th iteration and always after
    the last one.
    """
    settings = optimizer.settings
    count = images.shape[0]
    restarts = settings.restarts
    z_dim = optimizer.gan.sizes.z_dim
    z = tf.constant(initial_latents(indices, z_dim, settings.seed, restarts))
    tiled = tf.constant(np.repeat(images, restarts, axis=0))
    m = tf.zeros_like(z)
    v = tf.zeros_like(z)
    step = tf.constant(0, tf.int32)
    marks = checkpoint_iterations(iterations, save_every)
    done = 0
    best = np.zeros(count, dtype=np.int64)
    final_losses = None
    for mark in marks:
        z, m, v, step = optimizer.run(z, m, v, step, tiled, tf.constant(mark - done, tf.int32))
        done = mark
        total, _, _ = optimizer.evaluate(z, tiled)
        final_losses = total.reshape(count, restarts)
        best = final_losses.argmin(axis=1)
        z_best = z.numpy().reshape(count, restarts, z_dim)[np.arange(count), best]
        if on_checkpoint is not None:
            on_checkpoint(mark, z_best)
    z_best = z.numpy().reshape(count, restarts, z_dim)[np.arange(count), best]
    return z_best, final_losses, best


def checkpoint_iterations(iterations: int, save_every: int) -> list[int]:
    """Iterations at which outputs are saved: every ``save_every`` and always the last."""
    if iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {iterations}")
    if save_every <= 0:
        return [iterations]
    marks = list(range(save_every, iterations + 1, save_every))
    if not marks or marks[-1] != iterations:
        marks.append(iterations)
    return marks

