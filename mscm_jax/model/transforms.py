"""Analysis, synthesis and hyperprior transforms of the two model families.

- `mbt2018`: Minnen, Ballé, Toderici, "Joint Autoregressive and Hierarchical
  Priors for Learned Image Compression", NeurIPS 2018, Fig. 4 (5x5 stride-2
  convolutions with GDN; CompressAI's `JointAutoregressiveHierarchicalPriors`).
- `cheng2020-attn`: Cheng, Sun, Takeuchi, Katto, "Learned Image Compression
  with Discretized Gaussian Mixture Likelihoods and Attention Modules",
  CVPR 2020, Fig. 2 (CompressAI's `Cheng2020Attention`), the MSCM paper's base.

Each family maps an image (B, H, W, 3) to y (B, H/s_y, W/s_y, M), y to
z (B, H/s_z, W/s_z, N), and back, with the strides s_y, s_z its
`TransformFamily` declares (16 and 64 for both families here);
`hyper_synthesis` outputs 2M channels of hyperprior features for the
entropy-parameter network.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mscm_jax.model.layers import (
    GDN,
    AttentionBlock,
    Conv2d,
    ConvTranspose2d,
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    SubpelConv,
    leaky_relu,
)


class Transform(nn.Module):
    """A transform of a family: N and M channel counts, and its compute dtype."""

    N: int
    M: int
    dtype: jnp.dtype = jnp.float32


class Mbt2018Analysis(Transform):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = self.dtype
        for i in range(3):
            x = GDN(dtype=d, name=f"gdn{i}")(Conv2d(self.N, 5, 2, dtype=d, name=f"conv{i}")(x))
        return Conv2d(self.M, 5, 2, dtype=d, name="conv3")(x)


class Mbt2018Synthesis(Transform):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        d = self.dtype
        for i in range(3):
            y = ConvTranspose2d(self.N, 5, 2, dtype=d, name=f"deconv{i}")(y)
            y = GDN(inverse=True, dtype=d, name=f"igdn{i}")(y)
        return ConvTranspose2d(3, 5, 2, dtype=d, name="deconv3")(y)


class Mbt2018HyperAnalysis(Transform):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        d = self.dtype
        z = leaky_relu(Conv2d(self.N, 3, 1, dtype=d, name="conv0")(y))
        z = leaky_relu(Conv2d(self.N, 5, 2, dtype=d, name="conv1")(z))
        return Conv2d(self.N, 5, 2, dtype=d, name="conv2")(z)


class Mbt2018HyperSynthesis(Transform):
    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        d = self.dtype
        h = leaky_relu(ConvTranspose2d(self.M, 5, 2, dtype=d, name="deconv0")(z))
        h = leaky_relu(ConvTranspose2d(self.M * 3 // 2, 5, 2, dtype=d, name="deconv1")(h))
        return Conv2d(self.M * 2, 3, 1, dtype=d, name="conv2")(h)


class Cheng2020Analysis(Transform):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d, n = self.dtype, self.N
        x = ResidualBlockWithStride(n, 2, d, name="down0")(x)
        x = ResidualBlock(n, d, name="res0")(x)
        x = ResidualBlockWithStride(n, 2, d, name="down1")(x)
        x = AttentionBlock(d, name="attn0")(x)
        x = ResidualBlock(n, d, name="res1")(x)
        x = ResidualBlockWithStride(n, 2, d, name="down2")(x)
        x = ResidualBlock(n, d, name="res2")(x)
        x = Conv2d(self.M, 3, 2, dtype=d, name="down3")(x)
        return AttentionBlock(d, name="attn1")(x)


class Cheng2020Synthesis(Transform):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        d, n = self.dtype, self.N
        y = AttentionBlock(d, name="attn0")(y)
        y = ResidualBlock(n, d, name="res0")(y)
        y = ResidualBlockUpsample(n, 2, d, name="up0")(y)
        y = ResidualBlock(n, d, name="res1")(y)
        y = ResidualBlockUpsample(n, 2, d, name="up1")(y)
        y = AttentionBlock(d, name="attn1")(y)
        y = ResidualBlock(n, d, name="res2")(y)
        y = ResidualBlockUpsample(n, 2, d, name="up2")(y)
        y = ResidualBlock(n, d, name="res3")(y)
        return SubpelConv(3, 2, d, name="up3")(y)


class Cheng2020HyperAnalysis(Transform):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        d, n = self.dtype, self.N
        z = y
        for i, stride in enumerate((1, 1, 2, 1)):
            z = leaky_relu(Conv2d(n, 3, stride, dtype=d, name=f"conv{i}")(z))
        return Conv2d(n, 3, 2, dtype=d, name="conv4")(z)


class Cheng2020HyperSynthesis(Transform):
    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        d, m = self.dtype, self.M
        h = leaky_relu(Conv2d(m, 3, dtype=d, name="conv0")(z))
        h = leaky_relu(SubpelConv(m, 2, d, name="up0")(h))
        h = leaky_relu(Conv2d(m * 3 // 2, 3, dtype=d, name="conv1")(h))
        h = leaky_relu(SubpelConv(m * 3 // 2, 2, d, name="up1")(h))
        return Conv2d(m * 2, 3, dtype=d, name="conv2")(h)


@dataclasses.dataclass(frozen=True)
class LinearStep:
    """One convolution of a hyper-synthesis, as the integer path (`integer_path`) runs it.

    name: the parameter path under `h_s`; kind: "conv" (PyTorch padding
    k // 2) or "deconv" (`ConvTranspose2d`); shuffle: the pixel-shuffle factor
    after it (`SubpelConv`); activation: "leaky_relu" or None.
    """

    name: tuple[str, ...]
    kind: str
    kernel_size: int
    stride: int = 1
    shuffle: int = 1
    activation: str | None = "leaky_relu"


@dataclasses.dataclass(frozen=True)
class TransformFamily:
    """The four transforms of a model family and the geometry they fix.

    latent_stride: image pixels per element of y along each axis.
    hyper_stride: the same for z; the analysis pads images to a multiple of it.
    analysis_output: name of the analysis transform's last convolution, the one
      that sets the scale of y (`spread_latents`).
    hyper_synthesis_steps: the hyper-synthesis as a sequence of convolutions,
      what the integer path computes (a test checks it against the module).
    analysis_reach, synthesis_reach: how far, in elements of y, reach the
      pixels an element of y depends on (analysis) and the elements a pixel
      depends on (synthesis): what a tile's window must extend beyond its core
      (`tiling`; measured by differentiation in tests/test_tiling.py).
    """

    analysis: type[nn.Module]
    synthesis: type[nn.Module]
    hyper_analysis: type[nn.Module]
    hyper_synthesis: type[nn.Module]
    latent_stride: int
    hyper_stride: int
    analysis_output: str
    hyper_synthesis_steps: tuple[LinearStep, ...]
    analysis_reach: int
    synthesis_reach: int

    def latent_shapes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The coded y (h, w) and z (h, w) of a height x width image (padded to `hyper_stride`)."""
        zh, zw = -(-height // self.hyper_stride), -(-width // self.hyper_stride)
        ratio = self.hyper_stride // self.latent_stride
        return (ratio * zh, ratio * zw), (zh, zw)


TRANSFORMS: dict[str, TransformFamily] = {
    "mbt2018": TransformFamily(
        Mbt2018Analysis, Mbt2018Synthesis, Mbt2018HyperAnalysis, Mbt2018HyperSynthesis,
        latent_stride=16, hyper_stride=64, analysis_output="conv3",
        hyper_synthesis_steps=(
            LinearStep(("deconv0",), "deconv", 5, 2), LinearStep(("deconv1",), "deconv", 5, 2),
            LinearStep(("conv2",), "conv", 3, activation=None),
        ),
        analysis_reach=2, synthesis_reach=2,
    ),
    "cheng2020-attn": TransformFamily(
        Cheng2020Analysis, Cheng2020Synthesis, Cheng2020HyperAnalysis, Cheng2020HyperSynthesis,
        latent_stride=16, hyper_stride=64, analysis_output="down3",
        hyper_synthesis_steps=(
            LinearStep(("conv0",), "conv", 3), LinearStep(("up0", "conv"), "conv", 3, shuffle=2),
            LinearStep(("conv1",), "conv", 3), LinearStep(("up1", "conv"), "conv", 3, shuffle=2),
            LinearStep(("conv2",), "conv", 3, activation=None),
        ),
        analysis_reach=8, synthesis_reach=11,
    ),
}  # fmt: skip


def get_transform_family(name: str) -> TransformFamily:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; valid transforms are {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name]


def spread_latents(params: Any, transform: str, factor: float) -> Any:
    """`params` with the analysis transform's last convolution scaled by `factor`.

    A freshly initialized analysis outputs latents near 0, which all code to one
    symbol; tests and benchmarks of untrained models scale it so that symbols
    span several values. The input tree is not modified.
    """
    layer = get_transform_family(transform).analysis_output
    g_a = dict(params["params"]["g_a"])
    g_a[layer] = jax.tree.map(lambda w: w * factor, g_a[layer])
    return {**params, "params": {**params["params"], "g_a": g_a}}
