"""GAN losses and penalties as small pure functions of logits or critic outputs.

Conventions: ``*_logits`` are raw discriminator outputs ``[B]`` or ``[B, 1]``
(not probabilities); losses are means over the batch unless the name ends in
``_per_sample``, which returns ``[B]``.
"""

from __future__ import annotations

import tensorflow as tf

# Inside the square root of a gradient norm, so the norm's own gradient stays
# finite where the input gradient is exactly zero.
NORM_EPSILON = 1e-12


def _flat(logits):
    return tf.reshape(logits, [-1])


def ns_d_loss(real_logits, fake_logits):
    """Standard discriminator loss: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return (tf.reduce_mean(tf.nn.softplus(-_flat(real_logits)))
            + tf.reduce_mean(tf.nn.softplus(_flat(fake_logits))))


def ns_g_loss_per_sample(fake_logits):
    """Non-saturating generator loss per sample: -log sigmoid(D(G(z)))."""
    return tf.nn.softplus(-_flat(fake_logits))


def ns_g_loss(fake_logits):
    return tf.reduce_mean(ns_g_loss_per_sample(fake_logits))


def wasserstein_d_loss(real_critic, fake_critic):
    """Critic loss E[D(G(z))] - E[D(x)]; its negative is the Wasserstein estimate."""
    return tf.reduce_mean(_flat(fake_critic)) - tf.reduce_mean(_flat(real_critic))


def wasserstein_g_loss_per_sample(fake_critic):
    return -_flat(fake_critic)


def wasserstein_g_loss(fake_critic):
    return tf.reduce_mean(wasserstein_g_loss_per_sample(fake_critic))


def per_sample_norm(gradients):
    """Euclidean norm of each sample's gradient ``[B, ...]`` -> ``[B]``, epsilon inside the root."""
    flat = tf.reshape(gradients, [tf.shape(gradients)[0], -1])
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1) + NORM_EPSILON)


def input_gradient_norm(critic, points, training: bool = True):
    """Per-sample norm of dD/dx at ``points`` ``[B, H, W, C]`` -> ``[B]``."""
    with tf.GradientTape() as tape:
        tape.watch(points)
        outputs = critic(points, training=training)
    return per_sample_norm(tape.gradient(outputs, points))


def unit_norm_penalty(norms):
    """E[(||grad|| - 1)^2] over the batch (Gulrajani et al. 2017, eq. 3)."""
    return tf.reduce_mean(tf.square(norms - 1.0))


def interpolates(real, fake, epsilon):
    """x_hat = eps * x + (1 - eps) * G(z) with one ``epsilon`` ``[B]`` in [0, 1] per sample."""
    eps = tf.reshape(epsilon, [-1, 1, 1, 1])
    return eps * real + (1.0 - eps) * fake


def dragan_perturbed(real, alpha, noise, c: float = 0.5):
    """DRAGAN points x_hat = clip(x + alpha * C * std(x) * noise, -1, 1).

    ``alpha`` ``[B]`` ~ U(-1, 1) per sample and ``noise`` ``[B, H, W, C]`` ~ U(0, 1)
    per pixel; std(x) is the standard deviation of the whole real batch, as in
    the DRAGAN authors' code (Kodali et al. 2017). A batch of identical images
    has zero spread, so x_hat = x and the penalty stays finite.
    """
    spread = tf.math.reduce_std(real)
    delta = c * spread * noise
    return tf.clip_by_value(real + tf.reshape(alpha, [-1, 1, 1, 1]) * delta, -1.0, 1.0)


def squared_gradient_norm(gradients):
    """Sum of squares over a list of gradient tensors (None entries count as zero)."""
    return tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients if g is not None])
