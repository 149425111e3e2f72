"""The study's DCGAN backbone, shared by every GAN of the zoo.

Generator: z ``[B, z_dim]`` -> dense to 4x4x(16*gf) with ReLU, then 5x5
stride-2 transposed convolutions to 8*gf, 4*gf, 2*gf channels (batch norm and
ReLU) and to 3 channels with tanh: images ``[B, 64, 64, 3]`` in [-1, 1].
With gf = 64 the widths are the study's 1024, 512, 256, 128.

Discriminator: 5x5 stride-2 convolutions with df, 2*df, 4*df, 8*df channels
and LeakyReLU(0.2), batch norm on all but the first (when enabled), then a
dense layer to one logit ``[B, 1]``.

A layer followed by batch norm has no bias: batch norm subtracts the batch
mean, so such a bias gets a zero gradient (up to rounding) and Adam would
only turn rounding noise into steps. The networks compute the same
functions as the study's DCGAN code, which kept those biases.

Weights start from N(0, 0.02^2) at the study's width (gf = df = 64). A
narrower network scales that standard deviation by sqrt(64 / width) in the
layers whose fan-in grows with the width, so every layer multiplies the
signal's scale by the same factor as in the study's network. Without that, a
network without batch norm at width 16 starts with outputs about 17 times
smaller than the study's (G(z) nearly constant, D(x) nearly 0).
"""

from __future__ import annotations

import math

import keras
from keras import layers

# Momentum of the batch-norm moving averages, as in the DCGAN reference code
# (Keras' default of 0.99 lags far behind in short CPU runs).
BN_MOMENTUM = 0.9
INIT_STDDEV = 0.02
REFERENCE_WIDTH = 64  # the study's gf_dim and df_dim, at which INIT_STDDEV applies unscaled


def _init(seed, width: int | None = None):
    """Return N(0, std^2) weights, std scaled for a fan-in proportional to ``width``."""
    scale = 1.0 if width is None else math.sqrt(REFERENCE_WIDTH / width)
    return keras.initializers.RandomNormal(stddev=INIT_STDDEV * scale, seed=seed)


def build_generator(z_dim: int = 100, gf_dim: int = 64, image_size: int = 64,
                    batchnorm: bool = True, seed: int | None = None) -> keras.Model:
    if image_size % 16:
        raise ValueError(f"image size must be a multiple of 16, got {image_size}")
    base = image_size // 16
    z = keras.Input(shape=(z_dim,), name="z")
    x = layers.Dense(base * base * gf_dim * 16, use_bias=not batchnorm,
                     kernel_initializer=_init(seed), name="project")(z)
    x = layers.Reshape((base, base, gf_dim * 16))(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5, name="bn0")(x)
    x = layers.ReLU()(x)
    for index, width in enumerate((gf_dim * 8, gf_dim * 4, gf_dim * 2), start=1):
        x = layers.Conv2DTranspose(width, 5, strides=2, padding="same", use_bias=not batchnorm,
                                   kernel_initializer=_init(None if seed is None else seed + index,
                                                            gf_dim),
                                   name=f"deconv{index}")(x)
        if batchnorm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5, name=f"bn{index}")(x)
        x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(3, 5, strides=2, padding="same",
                               kernel_initializer=_init(None if seed is None else seed + 4, gf_dim),
                               name="deconv4")(x)
    images = layers.Activation("tanh", name="tanh")(x)
    return keras.Model(z, images, name="generator")


def build_discriminator(df_dim: int = 64, image_size: int = 64, batchnorm: bool = True,
                        output_bias: bool = True, seed: int | None = None) -> keras.Model:
    """Discriminator (critic) ``[B, H, W, 3]`` -> logits ``[B, 1]``.

    A Wasserstein critic is built with ``output_bias=False``: its loss
    E[D(G(z))] - E[D(x)] cancels any constant, so that bias would get an
    exactly zero gradient and never train.
    """
    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    x = images
    for index, width in enumerate((df_dim, df_dim * 2, df_dim * 4, df_dim * 8)):
        x = layers.Conv2D(width, 5, strides=2, padding="same",
                          use_bias=not (batchnorm and index > 0),
                          kernel_initializer=_init(None if seed is None else seed + 10 + index,
                                                   df_dim if index > 0 else None),
                          name=f"conv{index}")(x)
        if batchnorm and index > 0:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-5, name=f"bn{index}")(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Flatten()(x)
    logits = layers.Dense(1, use_bias=output_bias,
                          kernel_initializer=_init(None if seed is None else seed + 20, df_dim),
                          name="logit")(x)
    return keras.Model(images, logits, name="discriminator")
