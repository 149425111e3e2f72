"""One GAN of the zoo: networks, optimizers and the compiled training step.

A training step has three visible stages: compute each player's gradients,
transform them (consensus optimization adds its term before this point,
simultaneous updates take both at the same parameters), and apply them;
weight clipping is a hook after the critic update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from models import losses
from models.networks import build_discriminator, build_generator
from models.registry import GanSpec


@dataclass(frozen=True)
class Sizes:
    """Network sizes; a checkpoint only restores into identical sizes."""

    z_dim: int = 100
    gf_dim: int = 64
    df_dim: int = 64
    image_size: int = 64

    def as_dict(self) -> dict:
        return asdict(self)


def make_optimizer(settings: dict) -> keras.optimizers.Optimizer:
    name = settings["name"]
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=settings["learning_rate"],
                                     beta_1=settings["beta_1"], beta_2=settings["beta_2"],
                                     epsilon=settings.get("epsilon", 1e-8))
    if name == "rmsprop":
        # TensorFlow 1's RMSProp (the study's) had decay 0.9 and epsilon 1e-10.
        return keras.optimizers.RMSprop(learning_rate=settings["learning_rate"],
                                        rho=settings.get("rho", 0.9),
                                        epsilon=settings.get("epsilon", 1e-10))
    raise ValueError(f"unknown optimizer {name!r}")


class UnreachedVariableError(RuntimeError):
    """A trainable variable that the player's loss does not depend on."""


def _check_gradients(gradients, variables, player: str):
    missing = [getattr(v, "path", v.name) for g, v in zip(gradients, variables) if g is None]
    if missing:
        raise UnreachedVariableError(
            f"the {player} loss does not reach these trainable variables: {', '.join(missing)}")
    return gradients


class GAN:
    """Generator, discriminator (critic), their optimizers and a seeded RNG."""

    def __init__(self, spec: GanSpec, sizes: Sizes = Sizes(), seed: int = 0):
        self.spec = spec
        self.sizes = sizes
        keras.utils.set_random_seed(seed)
        self.generator = build_generator(sizes.z_dim, sizes.gf_dim, sizes.image_size,
                                         batchnorm=spec.g_batchnorm, seed=seed)
        self.discriminator = build_discriminator(sizes.df_dim, sizes.image_size,
                                                 batchnorm=spec.d_batchnorm,
                                                 output_bias=spec.loss != "wasserstein", seed=seed)
        self.g_optimizer = make_optimizer(spec.optimizer)
        self.d_optimizer = make_optimizer(spec.optimizer)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.rng = tf.random.Generator.from_seed(seed)
        self._compiled_step = None

    # ----- losses --------------------------------------------------------------

    def d_loss(self, real_logits, fake_logits):
        if self.spec.loss == "wasserstein":
            return losses.wasserstein_d_loss(real_logits, fake_logits)
        return losses.ns_d_loss(real_logits, fake_logits)

    def g_loss_per_sample(self, fake_logits):
        """Generator loss of each sample ``[B]``; also the inpainting perceptual loss."""
        if self.spec.loss == "wasserstein":
            return losses.wasserstein_g_loss_per_sample(fake_logits)
        return losses.ns_g_loss_per_sample(fake_logits)

    def penalty_points(self, real, fake):
        """Points where the regularizer evaluates the critic's input gradient."""
        batch = tf.shape(real)[0]
        if self.spec.penalty == "gradient_penalty":
            return losses.interpolates(real, fake, self.rng.uniform([batch]))
        if self.spec.penalty == "dragan":
            alpha = self.rng.uniform([batch], -1.0, 1.0)
            noise = self.rng.uniform(tf.shape(real))
            return losses.dragan_perturbed(real, alpha, noise, c=self.spec.extra.get("c", 0.5))
        return None

    def _penalty(self, real, fake):
        points = self.penalty_points(real, fake)
        if points is None:
            return tf.constant(0.0)
        norms = losses.input_gradient_norm(self.discriminator, points, training=True)
        return losses.unit_norm_penalty(norms)

    # ----- steps ----------------------------------------------------------------

    def _critic_update(self, real):
        d_vars = self.discriminator.trainable_variables
        z = self.rng.normal([tf.shape(real)[0], self.sizes.z_dim])
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            base = self.d_loss(real_logits, fake_logits)
            penalty = self._penalty(real, fake)
            total = base + self.spec.penalty_weight * penalty
        grads = _check_gradients(tape.gradient(total, d_vars), d_vars, "discriminator")
        self.d_optimizer.apply_gradients(zip(grads, d_vars))
        if self.spec.weight_clip is not None:
            for var in d_vars:
                var.assign(tf.clip_by_value(var, -self.spec.weight_clip, self.spec.weight_clip))
        wasserstein = tf.reduce_mean(real_logits) - tf.reduce_mean(fake_logits)
        return base, penalty, wasserstein

    def _generator_update(self, batch):
        g_vars = self.generator.trainable_variables
        z = self.rng.normal([batch, self.sizes.z_dim])
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            fake_logits = self.discriminator(fake, training=True)
            g_loss = tf.reduce_mean(self.g_loss_per_sample(fake_logits))
        grads = _check_gradients(tape.gradient(g_loss, g_vars), g_vars, "generator")
        self.g_optimizer.apply_gradients(zip(grads, g_vars))
        return g_loss

    def _alternating_step(self, real_group):
        base = penalty = wasserstein = tf.constant(0.0)
        for index in range(self.spec.n_critic):
            base, penalty, wasserstein = self._critic_update(real_group[index])
        g_loss = self._generator_update(tf.shape(real_group)[1])
        return {"d_loss": base, "g_loss": g_loss, "penalty": penalty, "wasserstein": wasserstein}

    def _simultaneous_step(self, real_group):
        real = real_group[0]
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        z = self.rng.normal([tf.shape(real)[0], self.sizes.z_dim])
        outputs = {}

        def player_losses():
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            base = self.d_loss(real_logits, fake_logits)
            penalty = self._penalty(real, fake)
            outputs.update(d_loss=base, penalty=penalty,
                           wasserstein=tf.reduce_mean(real_logits) - tf.reduce_mean(fake_logits))
            g_loss = tf.reduce_mean(self.g_loss_per_sample(fake_logits))
            outputs["g_loss"] = g_loss
            return base + self.spec.penalty_weight * penalty, g_loss

        d_grads, g_grads, consensus = simultaneous_gradients(player_losses, d_vars, g_vars,
                                                             self.spec.consensus_gamma)
        # Both gradients were taken at the same parameters; only now are they applied.
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        if self.spec.consensus_gamma:
            outputs["penalty"] = consensus
        return outputs

    def train_step_eager(self, real_group):
        """One generator iteration on ``real_group`` ``[n_critic, B, H, W, 3]`` in [-1, 1]."""
        if self.spec.schedule == "simultaneous":
            return self._simultaneous_step(real_group)
        return self._alternating_step(real_group)

    def train_step(self, real_group):
        """Compiled :meth:`train_step_eager`; returns a dict of scalar tensors."""
        if self._compiled_step is None:
            self._compiled_step = tf.function(self.train_step_eager, reduce_retracing=True)
        return self._compiled_step(real_group)

    @tf.function(reduce_retracing=True)
    def diagnostics(self, real):
        """Mean norm of the critic's input gradient at real, fake and interpolated points."""
        z = self.rng.normal([tf.shape(real)[0], self.sizes.z_dim])
        fake = self.generator(z, training=False)
        mixed = losses.interpolates(real, fake, self.rng.uniform([tf.shape(real)[0]]))
        return {name: tf.reduce_mean(losses.input_gradient_norm(self.discriminator, points,
                                                                training=False))
                for name, points in (("real", real), ("fake", fake), ("interpolated", mixed))}

    def sample(self, z: np.ndarray) -> np.ndarray:
        """G(z) in inference mode: ``[B, z_dim]`` -> ``[B, H, W, 3]`` in [-1, 1]."""
        return self.generator(tf.convert_to_tensor(z, tf.float32), training=False).numpy()


def simultaneous_gradients(player_losses, d_vars, g_vars, gamma=None):
    """Gradients of both players taken at the same parameters.

    ``player_losses()`` returns ``(d_loss, g_loss)``. With ``gamma``, both
    players also minimize gamma * L, the consensus term of
    :func:`consensus_term`, over their own parameters; differentiating it
    needs the gradients of the gradients, hence the nested tapes. Returns
    ``(d_grads, g_grads, L)``; L is 0 without ``gamma``.
    """
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape(persistent=True) as inner:
            d_loss, g_loss = player_losses()
        consensus = tf.constant(0.0, d_loss.dtype)
        d_total, g_total = d_loss, g_loss
        if gamma:
            consensus = consensus_term(inner.gradient(d_loss, d_vars), inner.gradient(g_loss, g_vars))
            d_total = d_loss + gamma * consensus
            g_total = g_loss + gamma * consensus
    d_grads = _check_gradients(outer.gradient(d_total, d_vars), d_vars, "discriminator")
    g_grads = _check_gradients(outer.gradient(g_total, g_vars), g_vars, "generator")
    del inner, outer
    return d_grads, g_grads, consensus


def consensus_term(d_grads, g_grads):
    """Consensus regularizer L = 1/2 ||v||^2 of Mescheder et al. 2017 (eq. 9).

    ``v`` is the joint vector field: each player's gradient of its own loss
    with respect to its own parameters. Both players add gamma * L to their loss.
    """
    return 0.5 * (losses.squared_gradient_norm(d_grads) + losses.squared_gradient_norm(g_grads))
