"""The study's eight GANs, each registered with its loss, regularizer and optimizer.

All share the DCGAN backbone of ``models/networks.py``; only what is listed
here differs between them.
"""

from models.registry import GanSpec, register

ADAM_DCGAN = {"name": "adam", "learning_rate": 2e-4, "beta_1": 0.5, "beta_2": 0.999}
ADAM_DRAGAN = {"name": "adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.9}

register(GanSpec(
    name="dcgan", label="NSGAN", loss="nonsaturating", optimizer=ADAM_DCGAN,
    reference="Radford et al. 2016 (DCGAN); Goodfellow et al. 2014 (non-saturating loss)"))

register(GanSpec(
    name="dcgan_sim", label="NSGAN_SIM", loss="nonsaturating", optimizer=ADAM_DCGAN,
    schedule="simultaneous",
    reference="simultaneous gradient descent, as analysed by Mescheder et al. 2017"))

register(GanSpec(
    name="dcgan-gp", label="NSGAN-GP", loss="nonsaturating", optimizer=ADAM_DCGAN,
    penalty="gradient_penalty", penalty_weight=10.0,
    reference="gradient penalty of Gulrajani et al. 2017 on the non-saturating loss"))

register(GanSpec(
    name="dcgan-cons", label="NSGAN-CONS", loss="nonsaturating",
    optimizer={"name": "rmsprop", "learning_rate": 1e-4},
    g_batchnorm=False, d_batchnorm=False, schedule="simultaneous", consensus_gamma=10.0,
    reference="Mescheder et al. 2017, The Numerics of GANs, consensus optimization (eq. 9)"))

register(GanSpec(
    name="wgan", label="WGAN", loss="wasserstein",
    optimizer={"name": "rmsprop", "learning_rate": 5e-5},
    n_critic=5, weight_clip=0.01,
    reference="Arjovsky et al. 2017, Wasserstein GAN, Algorithm 1"))

register(GanSpec(
    name="wgan-gp", label="WGAN-GP", loss="wasserstein",
    optimizer={"name": "adam", "learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.9},
    d_batchnorm=False, penalty="gradient_penalty", penalty_weight=10.0, n_critic=5,
    reference="Gulrajani et al. 2017, Improved Training of Wasserstein GANs, Algorithm 1"))

register(GanSpec(
    name="dragan", label="DRAGAN", loss="nonsaturating", optimizer=ADAM_DRAGAN,
    g_batchnorm=False, d_batchnorm=False, penalty="dragan", penalty_weight=10.0,
    extra={"c": 0.5},
    reference="Kodali et al. 2017, On Convergence and Stability of GANs (two-sided penalty "
              "of the authors' code)"))

register(GanSpec(
    name="dragan_bn", label="DRAGAN_BN", loss="nonsaturating", optimizer=ADAM_DRAGAN,
    penalty="dragan", penalty_weight=10.0, extra={"c": 0.5},
    reference="as dragan, with batch norm in G and D"))
