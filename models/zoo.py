"""The study's GANs, each registered with its loss, regularizer and optimizer."""

from models.registry import GanSpec, register

ADAM_DCGAN = {"name": "adam", "learning_rate": 2e-4, "beta_1": 0.5, "beta_2": 0.999}

register(GanSpec(
    name="dcgan", label="NSGAN", loss="nonsaturating", optimizer=ADAM_DCGAN,
    reference="Radford et al. 2016 (DCGAN); Goodfellow et al. 2014 (non-saturating loss)"))

register(GanSpec(
    name="wgan-gp", label="WGAN-GP", loss="wasserstein",
    optimizer={"name": "adam", "learning_rate": 1e-4, "beta_1": 0.0, "beta_2": 0.9},
    d_batchnorm=False, penalty="gradient_penalty", penalty_weight=10.0, n_critic=5,
    reference="Gulrajani et al. 2017, Improved Training of Wasserstein GANs, Algorithm 1"))
