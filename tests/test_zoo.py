"""The eight GANs of the study: published constants and each regularizer's mechanics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import get_spec, model_names
from models.gan import GAN, Sizes, consensus_term, simultaneous_gradients

TINY = Sizes(z_dim=8, gf_dim=2, df_dim=2, image_size=16)

# name: (label, loss, penalty, G batch norm, D batch norm, optimizer, n_critic, schedule)
STUDY_TABLE = {
    "dcgan": ("NSGAN", "nonsaturating", None, True, True, ("adam", 2e-4, 0.5, 0.999), 1, "alternating"),
    "dcgan_sim": ("NSGAN_SIM", "nonsaturating", None, True, True, ("adam", 2e-4, 0.5, 0.999), 1,
                  "simultaneous"),
    "dcgan-gp": ("NSGAN-GP", "nonsaturating", "gradient_penalty", True, True, ("adam", 2e-4, 0.5, 0.999), 1,
                 "alternating"),
    "dcgan-cons": ("NSGAN-CONS", "nonsaturating", None, False, False, ("rmsprop", 1e-4), 1, "simultaneous"),
    "wgan": ("WGAN", "wasserstein", None, True, True, ("rmsprop", 5e-5), 5, "alternating"),
    "wgan-gp": ("WGAN-GP", "wasserstein", "gradient_penalty", True, False, ("adam", 1e-4, 0.0, 0.9), 5,
                "alternating"),
    "dragan": ("DRAGAN", "nonsaturating", "dragan", False, False, ("adam", 1e-4, 0.5, 0.9), 1, "alternating"),
    "dragan_bn": ("DRAGAN_BN", "nonsaturating", "dragan", True, True, ("adam", 1e-4, 0.5, 0.9), 1,
                  "alternating"),
}


def test_registry_holds_the_eight_models():
    assert sorted(model_names()) == sorted(STUDY_TABLE)


@pytest.mark.parametrize("name", sorted(STUDY_TABLE))
def test_spec_matches_study_table(name):
    label, loss, penalty, g_bn, d_bn, optimizer, n_critic, schedule = STUDY_TABLE[name]
    spec = get_spec(name)
    assert spec.label == label
    assert spec.loss == loss
    assert spec.penalty == penalty
    assert (spec.g_batchnorm, spec.d_batchnorm) == (g_bn, d_bn)
    settings = spec.optimizer
    assert settings["name"] == optimizer[0]
    assert settings["learning_rate"] == optimizer[1]
    if optimizer[0] == "adam":
        assert (settings["beta_1"], settings["beta_2"]) == optimizer[2:]
    assert spec.n_critic == n_critic
    assert spec.schedule == schedule
    assert spec.penalty_weight == (10.0 if penalty else 0.0)
    assert spec.weight_clip == (0.01 if name == "wgan" else None)
    assert spec.consensus_gamma == (10.0 if name == "dcgan-cons" else None)


def test_weight_clipping_bounds_every_critic_parameter():
    gan = GAN(get_spec("wgan"), TINY, seed=0)
    gan.train_step(tf.random.uniform([5, 4, 16, 16, 3], -1, 1, seed=1))
    for var in gan.discriminator.trainable_variables:
        assert np.abs(var.numpy()).max() <= 0.01 + 1e-7, var.path
    # The generator is not clipped: batch norm's gamma stays near 1.
    assert max(np.abs(v.numpy()).max() for v in gan.generator.trainable_variables) > 0.5


def test_dragan_step_finite_on_identical_images():
    gan = GAN(get_spec("dragan"), TINY, seed=0)
    same = tf.fill([1, 4, 16, 16, 3], 0.25)
    values = gan.train_step(same)
    assert all(np.isfinite(float(v)) for v in values.values())


def test_critic_steps_use_fresh_batches():
    gan = GAN(get_spec("wgan-gp"), TINY, seed=0)
    seen = []
    original = gan._critic_update

    def recording(real):
        seen.append(real.numpy().copy())
        return original(real)

    gan._critic_update = recording
    group = tf.random.uniform([5, 2, 16, 16, 3], -1, 1, seed=3)
    gan.train_step_eager(group)
    assert len(seen) == 5
    for index, batch in enumerate(seen):
        assert np.array_equal(batch, group[index].numpy())


# ----- simultaneous updates and consensus optimization on a tiny float64 model -------------


def _tiny_players(seed=0):
    """G(z) = A z, D(x) = w . tanh(B x), with the non-saturating losses, in float64."""
    rng = np.random.default_rng(seed)
    params = {"A": rng.normal(size=(3, 2)), "B": rng.normal(size=(2, 3)), "w": rng.normal(size=(2,))}
    z = rng.normal(size=(4, 2))
    x = rng.normal(size=(4, 3))
    return params, z, x


def _numpy_losses(params, z, x):
    def softplus(t):
        return np.logaddexp(0.0, t)

    fake = z @ params["A"].T
    d_real = np.tanh(x @ params["B"].T) @ params["w"]
    d_fake = np.tanh(fake @ params["B"].T) @ params["w"]
    d_loss = softplus(-d_real).mean() + softplus(d_fake).mean()
    g_loss = softplus(-d_fake).mean()
    return d_loss, g_loss


def _numeric_gradient(fn, params, names, eps=1e-6):
    """Central differences of scalar ``fn(params)`` with respect to ``params[name]``."""
    grads = {}
    for name in names:
        grad = np.zeros_like(params[name])
        for index in np.ndindex(params[name].shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][index] += eps
            minus[name][index] -= eps
            grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
        grads[name] = grad
    return grads


def _tf_players(params, z, x):
    variables = {k: tf.Variable(v, dtype=tf.float64, name=k) for k, v in params.items()}
    z_t, x_t = tf.constant(z), tf.constant(x)

    def player_losses():
        fake = tf.matmul(z_t, variables["A"], transpose_b=True)
        d_real = tf.linalg.matvec(tf.tanh(tf.matmul(x_t, variables["B"], transpose_b=True)), variables["w"])
        d_fake = tf.linalg.matvec(tf.tanh(tf.matmul(fake, variables["B"], transpose_b=True)), variables["w"])
        d_loss = tf.reduce_mean(tf.nn.softplus(-d_real)) + tf.reduce_mean(tf.nn.softplus(d_fake))
        g_loss = tf.reduce_mean(tf.nn.softplus(-d_fake))
        return d_loss, g_loss

    return variables, player_losses


def test_simultaneous_gradients_taken_at_same_parameters():
    params, z, x = _tiny_players()
    variables, player_losses = _tf_players(params, z, x)
    d_vars, g_vars = [variables["B"], variables["w"]], [variables["A"]]
    d_grads, g_grads, consensus = simultaneous_gradients(player_losses, d_vars, g_vars)
    expected_d = _numeric_gradient(lambda p: _numpy_losses(p, z, x)[0], params, ["B", "w"])
    expected_g = _numeric_gradient(lambda p: _numpy_losses(p, z, x)[1], params, ["A"])
    assert np.allclose(d_grads[0].numpy(), expected_d["B"], atol=1e-7)
    assert np.allclose(d_grads[1].numpy(), expected_d["w"], atol=1e-7)
    assert np.allclose(g_grads[0].numpy(), expected_g["A"], atol=1e-7)
    assert float(consensus) == 0.0


def test_consensus_term_and_its_gradient_match_finite_differences():
    params, z, x = _tiny_players(seed=1)
    gamma = 10.0

    def consensus_numpy(p):
        # L = 1/2 (||dL_D/dD||^2 + ||dL_G/dG||^2), inner gradients by finite differences.
        inner_d = _numeric_gradient(lambda q: _numpy_losses(q, z, x)[0], p, ["B", "w"], eps=1e-5)
        inner_g = _numeric_gradient(lambda q: _numpy_losses(q, z, x)[1], p, ["A"], eps=1e-5)
        squares = sum(np.sum(g ** 2) for g in inner_d.values()) + np.sum(inner_g["A"] ** 2)
        return 0.5 * squares

    variables, player_losses = _tf_players(params, z, x)
    d_vars, g_vars = [variables["B"], variables["w"]], [variables["A"]]
    d_grads, g_grads, consensus = simultaneous_gradients(player_losses, d_vars, g_vars, gamma=gamma)
    assert float(consensus) == pytest.approx(consensus_numpy(params), rel=1e-6)

    # d(L_D + gamma L)/dD and d(L_G + gamma L)/dG by finite differences of the NumPy values.
    d_total = _numeric_gradient(lambda p: _numpy_losses(p, z, x)[0] + gamma * consensus_numpy(p),
                                params, ["B", "w"], eps=1e-4)
    g_total = _numeric_gradient(lambda p: _numpy_losses(p, z, x)[1] + gamma * consensus_numpy(p),
                                params, ["A"], eps=1e-4)
    assert np.allclose(d_grads[0].numpy(), d_total["B"], rtol=1e-3, atol=1e-4)
    assert np.allclose(d_grads[1].numpy(), d_total["w"], rtol=1e-3, atol=1e-4)
    assert np.allclose(g_grads[0].numpy(), g_total["A"], rtol=1e-3, atol=1e-4)


def test_consensus_term_hand_value():
    d_grads = [tf.constant([1.0, 2.0]), tf.constant([[2.0]])]
    g_grads = [tf.constant([3.0])]
    # 1/2 (1 + 4 + 4 + 9)
    assert float(consensus_term(d_grads, g_grads)) == pytest.approx(9.0)
