"""One GAN of the zoo: networks, optimizers and the compiled training step.

A training step has three visible stages: compute each player's gradients,
transform them (consensus optimization adds its term before this point,
simultaneous updates take both at the same parameters), and apply them;
weight clipping is a hook after the critic update.

With a ``tf.distribute`` strategy of several replicas (``train.py --gpus N``)
the same step runs data-parallel and computes the update of the
single-device step on the same global batch, up to float rounding:

- every random draw (z, the gradient-penalty epsilon, DRAGAN's alpha and
  noise) is made once for the global batch, in the single-device order, and
  each replica takes its contiguous slice of it and of the real batch;
- each replica divides its batch-mean losses by the number of replicas, and
  the Keras optimizer sums the replicas' gradients, so the applied gradient
  is that of the global batch mean;
- batch norm layers are switched to synchronized statistics, so the mean and
  variance are those of the global batch;
- penalties are computed per replica on the replica's own points, which is
  exact because a critic without batch norm scores each point on its own.
  :func:`check_distributable` rejects the models where this does not hold.
"""

from __future__ import annotations

import contextlib
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


class UnsupportedDistribution(ValueError):
    """A GAN whose training step cannot be split across replicas."""


def check_distributable(spec: GanSpec) -> None:
    """Raise UnsupportedDistribution if ``spec`` cannot train on several replicas.

    Two cases are rejected. The consensus term is the squared norm of the
    global gradient, which is not a sum of per-replica terms. A penalty on a
    critic with batch norm needs the second derivative through the
    synchronized batch statistics.
    """
    if spec.consensus_gamma:
        raise UnsupportedDistribution(
            f"{spec.name} uses consensus optimization, whose regularizer is the squared norm of "
            "the gradient of the whole batch; it cannot be split across replicas. Train it on "
            "one device (--gpus 0 or 1).")
    if spec.penalty is not None and spec.d_batchnorm:
        # NOTE: measured with TensorFlow 2.21 on two logical CPUs. The
        # penalty's gradient with respect to the critic's weights, taken
        # through Keras' synchronized batch norm, differed from the
        # single-device gradient by up to a fifth of its size. The input
        # gradient inside the penalty matched.
        penalty = {"gradient_penalty": "gradient penalty", "dragan": "DRAGAN penalty"}[spec.penalty]
        raise UnsupportedDistribution(
            f"{spec.name} puts a {penalty} on a critic with batch norm; "
            "its gradient through batch statistics synchronized across replicas does not match "
            "the single-device gradient. Train it on one device (--gpus 0 or 1).")


class GAN:
    """Generator, discriminator (critic), their optimizers and a seeded RNG.

    ``strategy`` is an optional ``tf.distribute`` strategy; with more than
    one replica the variables are mirrored and :meth:`train_step` runs
    data-parallel (see the module docstring). With None or one replica the
    GAN lives on the default device.
    """

    def __init__(self, spec: GanSpec, sizes: Sizes = Sizes(), seed: int = 0,
                 strategy: tf.distribute.Strategy | None = None):
        self.spec = spec
        self.sizes = sizes
        if strategy is not None and strategy.num_replicas_in_sync < 2:
            strategy = None
        if strategy is not None:
            check_distributable(spec)
        self.strategy = strategy
        keras.utils.set_random_seed(seed)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.generator = build_generator(sizes.z_dim, sizes.gf_dim, sizes.image_size,
                                             batchnorm=spec.g_batchnorm, seed=seed)
            self.discriminator = build_discriminator(sizes.df_dim, sizes.image_size,
                                                     batchnorm=spec.d_batchnorm,
                                                     output_bias=spec.loss != "wasserstein",
                                                     seed=seed)
            self.g_optimizer = make_optimizer(spec.optimizer)
            self.d_optimizer = make_optimizer(spec.optimizer)
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if strategy is not None:
            _synchronize_batch_norm(self.generator, self.discriminator)
        # Outside the strategy's scope: one generator, drawn from in
        # cross-replica context only, so its stream does not depend on the
        # number of replicas.
        self.rng = tf.random.Generator.from_seed(seed)
        self._compiled_step = None
        self._compiled_sample = None

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
        """Compiled :meth:`train_step_eager`; returns a dict of scalar tensors.

        With a strategy of several replicas, runs :meth:`distributed_step_eager`
        instead; ``real_group`` is then still the global batch.
        """
        if self._compiled_step is None:
            step = self.train_step_eager if self.strategy is None else self.distributed_step_eager
            self._compiled_step = tf.function(step, reduce_retracing=True)
        return self._compiled_step(real_group)

    # ----- data-parallel steps --------------------------------------------------

    def _draw_critic_inputs(self, real):
        """Draw z and the penalty's input for the whole batch ``real``, in single-device order.

        Returns ``(z, penalty_input)``: epsilon ``[B]`` for the gradient
        penalty, the perturbed points for DRAGAN (they depend only on the
        real batch, and their std(x) must be that of the whole batch), or an
        unused ``[B]`` of zeros without a penalty.
        """
        batch = tf.shape(real)[0]
        z = self.rng.normal([batch, self.sizes.z_dim])
        if self.spec.penalty == "dragan":
            return z, self.penalty_points(real, None)
        if self.spec.penalty == "gradient_penalty":
            return z, self.rng.uniform([batch])
        return z, tf.zeros([batch])

    def _replica_penalty(self, real, fake, penalty_input):
        if self.spec.penalty is None:
            return tf.constant(0.0)
        if self.spec.penalty == "gradient_penalty":
            points = losses.interpolates(real, fake, penalty_input)
        else:
            points = penalty_input
        norms = losses.input_gradient_norm(self.discriminator, points, training=True)
        return losses.unit_norm_penalty(norms)

    def _replica_critic_update(self, real, z, penalty_input):
        share = _replica_share()
        real, z, penalty_input = _replica_slice(real, z, penalty_input)
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            base = self.d_loss(real_logits, fake_logits)
            penalty = self._replica_penalty(real, fake, penalty_input)
            total = (base + self.spec.penalty_weight * penalty) * share
        grads = _check_gradients(tape.gradient(total, d_vars), d_vars, "discriminator")
        self.d_optimizer.apply_gradients(zip(grads, d_vars))
        wasserstein = tf.reduce_mean(real_logits) - tf.reduce_mean(fake_logits)
        return base * share, penalty * share, wasserstein * share

    def _replica_generator_update(self, z):
        share = _replica_share()
        (z,) = _replica_slice(z)
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            fake_logits = self.discriminator(fake, training=True)
            g_loss = tf.reduce_mean(self.g_loss_per_sample(fake_logits))
            scaled = g_loss * share
        grads = _check_gradients(tape.gradient(scaled, g_vars), g_vars, "generator")
        self.g_optimizer.apply_gradients(zip(grads, g_vars))
        return scaled

    def _replica_simultaneous_update(self, real, z, penalty_input):
        share = _replica_share()
        real, z, penalty_input = _replica_slice(real, z, penalty_input)
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        outputs = {}

        def player_losses():
            fake = self.generator(z, training=True)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
            base = self.d_loss(real_logits, fake_logits)
            penalty = self._replica_penalty(real, fake, penalty_input)
            g_loss = tf.reduce_mean(self.g_loss_per_sample(fake_logits))
            outputs.update(d_loss=base * share, penalty=penalty * share, g_loss=g_loss * share,
                           wasserstein=(tf.reduce_mean(real_logits)
                                        - tf.reduce_mean(fake_logits)) * share)
            return (base + self.spec.penalty_weight * penalty) * share, g_loss * share

        d_grads, g_grads, _ = simultaneous_gradients(player_losses, d_vars, g_vars)
        self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
        return outputs

    def _clip_critic(self):
        # Runs in cross-replica context, where an assignment updates every mirror.
        for var in self.discriminator.trainable_variables:
            var.assign(tf.clip_by_value(var, -self.spec.weight_clip, self.spec.weight_clip))

    def distributed_step_eager(self, real_group):
        """One generator iteration on the global batch ``real_group``, split across replicas.

        Must run in cross-replica context (outside ``strategy.run``), since
        it draws the random inputs there and hands each replica its slice.
        The returned losses are those of the global batch.
        """
        strategy = self.strategy
        batch = real_group.shape[1]
        if batch is not None and batch % strategy.num_replicas_in_sync:
            raise ValueError(f"the batch of {batch} images does not split evenly across "
                             f"{strategy.num_replicas_in_sync} replicas; use a batch size that "
                             "is a multiple of the number of GPUs")

        def total(value):
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        if self.spec.schedule == "simultaneous":
            real = real_group[0]
            z, penalty_input = self._draw_critic_inputs(real)
            outputs = strategy.run(self._replica_simultaneous_update, args=(real, z, penalty_input))
            return {key: total(value) for key, value in outputs.items()}

        base = penalty = wasserstein = tf.constant(0.0)
        for index in range(self.spec.n_critic):
            real = real_group[index]
            z, penalty_input = self._draw_critic_inputs(real)
            base, penalty, wasserstein = (total(value) for value in strategy.run(
                self._replica_critic_update, args=(real, z, penalty_input)))
            if self.spec.weight_clip is not None:
                self._clip_critic()
        z = self.rng.normal([tf.shape(real_group)[1], self.sizes.z_dim])
        g_loss = total(strategy.run(self._replica_generator_update, args=(z,)))
        return {"d_loss": base, "g_loss": g_loss, "penalty": penalty, "wasserstein": wasserstein}

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
        """Return G(z) in inference mode: ``[B, z_dim]`` -> ``[B, H, W, 3]`` in [-1, 1].

        Compiled, because training calls it at every logged step and an eager
        call of a small generator costs a good part of a training step. The
        compiled function keeps the generator it was first called with.
        """
        if self._compiled_sample is None:
            self._compiled_sample = tf.function(lambda z: self.generator(z, training=False),
                                                reduce_retracing=True)
        return self._compiled_sample(tf.convert_to_tensor(z, tf.float32)).numpy()


def _synchronize_batch_norm(*models) -> None:
    """Make every batch norm layer of ``models`` use the statistics of the global batch.

    Keras 3 reads ``synchronized`` when the layer is called (TensorFlow
    backend), and all-reduces the sums inside a replica context only. The
    backbone's models are flat, so ``model.layers`` contains every such layer.
    """
    for model in models:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True


def _replica_share():
    """Return 1 / replicas: each replica's batch-mean loss is this share of the global mean."""
    return 1.0 / tf.distribute.get_replica_context().num_replicas_in_sync


def _replica_slice(*tensors):
    """Return this replica's contiguous slice of each global-batch tensor (batch on axis 0)."""
    context = tf.distribute.get_replica_context()
    index = context.replica_id_in_sync_group
    count = context.num_replicas_in_sync
    sliced = []
    for tensor in tensors:
        size = tf.shape(tensor)[0] // count
        sliced.append(tensor[index * size:(index + 1) * size])
    return sliced


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
