"""Losses, penalties, the backbone, one training step per model and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from models import checkpoint, get_spec, losses, model_names
from models.gan import GAN, Sizes, UnreachedVariableError
from models.networks import build_discriminator, build_generator

TINY = Sizes(z_dim=8, gf_dim=2, df_dim=2, image_size=16)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ----- pure losses, against hand-computed values ---------------------------------------


def test_ns_losses_match_hand_values():
    real, fake = [2.0, -1.0], [0.5, -3.0]
    expected_d = (-math.log(sigmoid(2.0)) - math.log(sigmoid(-1.0))) / 2 \
        + (-math.log(1 - sigmoid(0.5)) - math.log(1 - sigmoid(-3.0))) / 2
    expected_g = (-math.log(sigmoid(0.5)) - math.log(sigmoid(-3.0))) / 2
    assert float(losses.ns_d_loss(tf.constant(real), tf.constant(fake))) == pytest.approx(expected_d, rel=1e-6)
    assert float(losses.ns_g_loss(tf.constant(fake))) == pytest.approx(expected_g, rel=1e-6)
    per_sample = losses.ns_g_loss_per_sample(tf.constant([[0.5], [-3.0]])).numpy()
    assert per_sample == pytest.approx([-math.log(sigmoid(0.5)), -math.log(sigmoid(-3.0))], rel=1e-6)


def test_wasserstein_losses_match_hand_values():
    real, fake = tf.constant([1.0, 3.0]), tf.constant([-2.0, 0.0])
    assert float(losses.wasserstein_d_loss(real, fake)) == pytest.approx(-1.0 - 2.0)
    assert float(losses.wasserstein_g_loss(fake)) == pytest.approx(1.0)


def test_unit_norm_penalty_hand_values():
    grads = tf.constant(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32).reshape(2, 1, 1, 2))
    norms = losses.per_sample_norm(grads).numpy()
    assert norms == pytest.approx([5.0, 0.0], abs=1e-5)
    # ((5 - 1)^2 + (0 - 1)^2) / 2
    assert float(losses.unit_norm_penalty(tf.constant(norms))) == pytest.approx(8.5, abs=1e-4)


def test_gradient_penalty_on_linear_critic():
    # D(x) = sum(w * x) has input gradient w everywhere, so the penalty is (||w|| - 1)^2.
    w = tf.constant(np.full((1, 2, 2, 1), 0.5 * 3, np.float32))  # ||w|| = sqrt(4 * 2.25) = 3

    def critic(x, training=True):
        return tf.reduce_sum(x * w, axis=[1, 2, 3])

    real = tf.random.normal([4, 2, 2, 1], seed=1)
    fake = tf.random.normal([4, 2, 2, 1], seed=2)
    points = losses.interpolates(real, fake, tf.constant([0.0, 0.25, 0.5, 1.0]))
    assert np.allclose(points[0].numpy(), fake[0].numpy())
    assert np.allclose(points[3].numpy(), real[3].numpy())
    assert np.allclose(points[1].numpy(), 0.25 * real[1].numpy() + 0.75 * fake[1].numpy())
    norms = losses.input_gradient_norm(critic, points)
    assert float(losses.unit_norm_penalty(norms)) == pytest.approx(4.0, rel=1e-5)


def test_penalty_finite_at_zero_gradient():
    # D(x) = w * sum(x^2) has input gradient 2 w x = 0 at x = 0; without the
    # epsilon inside the root, d||grad||/dw would be 0/0 there.
    w = tf.Variable(1.5)
    x = tf.zeros([3, 4, 4, 3])

    def critic(points, training=True):
        return w * tf.reduce_sum(tf.square(points), axis=[1, 2, 3])

    with tf.GradientTape() as tape:
        penalty = losses.unit_norm_penalty(losses.input_gradient_norm(critic, x))
    assert float(penalty) == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(tape.gradient(penalty, w).numpy())


def test_dragan_points_hand_values_and_zero_spread():
    real = tf.constant(np.array([0.0, 1.0, 0.0, 1.0], np.float32).reshape(2, 1, 1, 2))
    std = float(np.std([0.0, 1.0, 0.0, 1.0]))  # 0.5
    noise = tf.constant(np.array([1.0, 0.5, 0.2, 0.0], np.float32).reshape(2, 1, 1, 2))
    alpha = tf.constant([1.0, -0.5])
    out = losses.dragan_perturbed(real, alpha, noise, c=0.5).numpy().ravel()
    expected = np.clip(np.array([0.0 + 1.0 * 0.5 * std * 1.0, 1.0 + 1.0 * 0.5 * std * 0.5,
                                 0.0 - 0.5 * 0.5 * std * 0.2, 1.0 - 0.5 * 0.5 * std * 0.0]), -1, 1)
    assert out == pytest.approx(expected, abs=1e-6)
    same = tf.ones([3, 4, 4, 3]) * 0.3
    unchanged = losses.dragan_perturbed(same, tf.constant([1.0, -1.0, 0.5]), tf.ones([3, 4, 4, 3]))
    assert np.allclose(unchanged.numpy(), 0.3)


# ----- backbone --------------------------------------------------------------------------


def test_paper_backbone_widths():
    generator = build_generator(100, 64, 64)
    widths = [layer.filters for layer in generator.layers if hasattr(layer, "filters")]
    assert widths == [512, 256, 128, 3]
    assert generator.get_layer("project").units == 4 * 4 * 1024
    assert generator.output_shape == (None, 64, 64, 3)
    discriminator = build_discriminator(64, 64, batchnorm=False)
    assert [layer.filters for layer in discriminator.layers if hasattr(layer, "filters")] == [64, 128, 256, 512]
    assert not any("batch_normalization" in type(l).__name__.lower() for l in discriminator.layers)
    assert discriminator.output_shape == (None, 1)
    with_bn = build_discriminator(64, 64, batchnorm=True)
    assert sum(type(l).__name__ == "BatchNormalization" for l in with_bn.layers) == 3


@pytest.mark.parametrize("width", [16, 64])
def test_init_std_matches_study_gain(width):
    # Layers whose fan-in grows with the width get 0.02 * sqrt(64 / width); the
    # dense projection from z and the first convolution keep 0.02.
    scaled = 0.02 * math.sqrt(64 / width)
    generator = build_generator(100, width, 64, batchnorm=False, seed=3)
    discriminator = build_discriminator(width, 64, batchnorm=False, seed=3)
    expected = {"project": 0.02, "deconv1": scaled, "deconv2": scaled, "deconv3": scaled,
                "deconv4": scaled, "conv0": 0.02, "conv1": scaled, "conv2": scaled, "conv3": scaled,
                "logit": scaled}
    for name, std in expected.items():
        model = generator if name in {"project"} or name.startswith("deconv") else discriminator
        kernel = model.get_layer(name).kernel.numpy()
        assert kernel.std() == pytest.approx(std, rel=0.06), name


def test_narrow_network_keeps_output_scale():
    # Without batch norm, G(z) of a quarter-width generator starts at the scale of the study's.
    z = tf.random.stateless_normal([256, 100], seed=[1, 2])
    narrow = float(tf.math.reduce_std(build_generator(100, 16, 64, batchnorm=False, seed=5)(z)))
    study = float(tf.math.reduce_std(build_generator(100, 64, 64, batchnorm=False, seed=5)(z)))
    assert narrow == pytest.approx(study, rel=0.25)


# ----- registry and steps ------------------------------------------------------------------


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_spec("nosuch")
    for name in ("dcgan", "wgan-gp"):
        assert name in str(info.value)


def test_study_hyperparameters():
    dcgan, wgan_gp = get_spec("dcgan"), get_spec("wgan-gp")
    assert dcgan.optimizer == {"name": "adam", "learning_rate": 2e-4, "beta_1": 0.5, "beta_2": 0.999}
    assert dcgan.n_critic == 1
    assert dcgan.d_batchnorm
    assert dcgan.penalty is None
    assert wgan_gp.optimizer == {"name": "adam", "learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.9}
    assert wgan_gp.n_critic == 5
    assert not wgan_gp.d_batchnorm
    assert wgan_gp.g_batchnorm
    assert wgan_gp.penalty == "gradient_penalty"
    assert wgan_gp.penalty_weight == 10.0


@pytest.mark.parametrize("name", model_names())
def test_one_step_changes_every_variable(name):
    spec = get_spec(name)
    # Clipping batch norm's gamma to 0.01 shrinks a 2-channel critic's output
    # so far that the generator's gradient underflows RMSProp's epsilon; a
    # slightly wider critic keeps the check meaningful for WGAN.
    sizes = Sizes(8, 2, 8, 16) if spec.weight_clip else TINY
    gan = GAN(spec, sizes, seed=3)
    before_g = [v.numpy().copy() for v in gan.generator.trainable_variables]
    before_d = [v.numpy().copy() for v in gan.discriminator.trainable_variables]
    real = tf.random.uniform([spec.n_critic, 4, 16, 16, 3], -1, 1, seed=4)
    values = gan.train_step(real)
    assert all(np.isfinite(float(v)) for v in values.values())
    for var, old in zip(gan.generator.trainable_variables, before_g):
        assert not np.array_equal(var.numpy(), old), f"{name}: generator variable {var.path} unchanged"
    for var, old in zip(gan.discriminator.trainable_variables, before_d):
        assert not np.array_equal(var.numpy(), old), f"{name}: critic variable {var.path} unchanged"


def test_unreached_variable_is_an_error():
    import keras

    class WithStrayLayer(keras.Model):
        """The generator plus a dense layer that the output never uses."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.stray = keras.layers.Dense(1)
            self.stray.build((None, 1))

        def call(self, z, training=False):
            return self.inner(z, training=training)

    gan = GAN(get_spec("dcgan"), TINY, seed=0)
    gan.generator = WithStrayLayer(gan.generator)
    with pytest.raises(UnreachedVariableError, match="generator loss does not reach"):
        gan.train_step_eager(tf.zeros([1, 2, 16, 16, 3]))


def test_seed_gives_identical_losses():
    def run():
        gan = GAN(get_spec("wgan-gp"), TINY, seed=11)
        real = tf.random.stateless_uniform([5, 4, 16, 16, 3], seed=[1, 2], minval=-1, maxval=1)
        return [{k: float(v) for k, v in gan.train_step(real).items()} for _ in range(2)]

    assert run() == run()


def test_wasserstein_estimate_is_negative_critic_loss():
    gan = GAN(get_spec("wgan-gp"), TINY, seed=1)
    real = tf.random.uniform([5, 4, 16, 16, 3], -1, 1, seed=2)
    values = gan.train_step(real)
    # Both come from the last critic update, before its parameters changed.
    assert float(values["wasserstein"]) == pytest.approx(-float(values["d_loss"]), abs=1e-5)


# ----- checkpoints ------------------------------------------------------------------------


def test_checkpoint_round_trip_and_rotation(tmp_path):
    gan = GAN(get_spec("dcgan"), TINY, seed=0)
    gan.train_step(tf.random.uniform([1, 4, 16, 16, 3], -1, 1, seed=1))
    for step in (1, 2, 3, 4):
        checkpoint.save(gan, tmp_path, step, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-00000003.npz", "ckpt-00000004.npz"]
    other = GAN(get_spec("dcgan"), TINY, seed=99)
    assert checkpoint.restore(other, checkpoint.latest(tmp_path)) == 4
    z = np.random.default_rng(0).standard_normal((3, TINY.z_dim)).astype(np.float32)
    assert np.allclose(other.sample(z), gan.sample(z), atol=1e-6)
    for mine, theirs in zip(gan.d_optimizer.variables, other.d_optimizer.variables):
        assert np.array_equal(mine.numpy(), theirs.numpy())


def test_checkpoint_mismatch_names_both_values(tmp_path):
    gan = GAN(get_spec("dcgan"), TINY, seed=0)
    path = checkpoint.save(gan, tmp_path, 1)
    wider = GAN(get_spec("dcgan"), Sizes(8, 4, 2, 16), seed=0)
    with pytest.raises(checkpoint.CheckpointMismatch, match="gf_dim: checkpoint 2, requested 4"):
        checkpoint.restore(wider, path)
    other_model = GAN(get_spec("wgan-gp"), TINY, seed=0)
    with pytest.raises(checkpoint.CheckpointMismatch, match="model: checkpoint 'dcgan', requested 'wgan-gp'"):
        checkpoint.restore(other_model, path)
