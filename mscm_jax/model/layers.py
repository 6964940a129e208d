"""Flax layers of the Minnen 2018 and Cheng 2020 transforms (NHWC).

Convolutions pad explicitly as PyTorch/CompressAI do (`pad = k // 2`), not
with XLA's "SAME", which at stride 2 pads asymmetrically and so samples other
taps: published PyTorch weights then import unchanged (up to layout).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mscm_jax.model.ops import lower_bound, pixel_shuffle

# PyTorch's default init (kaiming_uniform with a = sqrt(5)) is U(-b, b) with
# b = 1 / sqrt(fan_in): variance 1 / (3 fan_in).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with PyTorch's default slope 0.01, as in CompressAI."""
    return jax.nn.leaky_relu(x, 0.01)


class Conv2d(nn.Module):
    """k x k convolution with PyTorch padding `k // 2`."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", torch_default_init, (k, k, x.shape[-1], self.features))
        pad = k // 2
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def transposed_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of the `stride`-dilated input with which a stride-1
    convolution equals `torch.nn.ConvTranspose2d(k, s, padding=k // 2, output_padding=s - 1)`."""
    before = kernel_size - 1 - kernel_size // 2
    return before, before + stride - 1


class ConvTranspose2d(nn.Module):
    """Transposed convolution matching `torch.nn.ConvTranspose2d(k, s, k//2, s-1)`.

    Implemented as a stride-1 convolution over the input dilated by `stride`,
    padded `k - 1 - p` before and `k - 1 - p + output_padding` after, so the
    output is exactly `stride` times the input. The kernel is stored in that
    forward-convolution form (HWIO); a PyTorch weight (in, out, kh, kw) imports
    as `w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)`.
    """

    features: int
    kernel_size: int = 5
    stride: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", torch_default_init, (k, k, x.shape[-1], self.features))
        before, after = transposed_padding(k, s)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(1, 1),
            padding=((before, after), (before, after)),
            lhs_dilation=(s, s),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)


def gdn(x: jax.Array, beta: jax.Array, gamma: jax.Array, inverse: bool = False) -> jax.Array:
    """GDN, `x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`, or IGDN (multiply instead).

    Ballé, Laparra, Simoncelli, "Density Modeling of Images using a Generalized
    Normalization Transformation", ICLR 2016, Eq. (1) with exponents 2 and 1/2.
    IGDN is the first step of the fixed-point inversion of GDN (`invert_gdn`).
    """
    norm = beta + jnp.einsum("...j,ij->...i", x * x, gamma)
    return x * (jnp.sqrt(norm) if inverse else jax.lax.rsqrt(norm))


def invert_gdn(y: jax.Array, beta: jax.Array, gamma: jax.Array, iterations: int = 30) -> jax.Array:
    """Exact inverse of `gdn` by fixed-point iteration (Ballé 2016, Sec. 4).

    `x <- y * sqrt(beta + gamma x^2)` from `x = y`; one step is IGDN.
    """
    return jax.lax.fori_loop(
        0, iterations, lambda _, x: y * jnp.sqrt(beta + jnp.einsum("...j,ij->...i", x * x, gamma)), y
    )


class GDN(nn.Module):
    """Flax GDN / inverse GDN with reparametrized, lower-bounded parameters.

    beta and gamma are stored as `v` with `p = max(v, bound)^2 - pedestal`
    (CompressAI's `NonNegativeParametrizer`), so that they stay non-negative
    and their gradients stay well scaled near zero. gamma is (out, in), as in
    PyTorch, so CompressAI weights import unchanged.
    """

    inverse: bool = False
    beta_min: float = 1e-6
    gamma_init: float = 0.1
    reparam_offset: float = 2.0**-18
    dtype: jnp.dtype = jnp.float32

    def __call__(self, x: jax.Array) -> jax.Array:
        beta, gamma = self.parameters(x.shape[-1])
        return gdn(x.astype(jnp.float32), beta, gamma, self.inverse).astype(self.dtype)

    @nn.compact
    def parameters(self, channels: int) -> tuple[jax.Array, jax.Array]:
        """The effective (beta, gamma) after reparametrization."""
        pedestal = self.reparam_offset**2
        beta_v = self.param("beta", lambda _, s: jnp.sqrt(jnp.ones(s) + pedestal), (channels,))
        gamma_v = self.param(
            "gamma",
            lambda _, s: jnp.sqrt(self.gamma_init * jnp.eye(s[0]) + pedestal),
            (channels, channels),
        )
        beta = lower_bound(beta_v, (self.beta_min + pedestal) ** 0.5) ** 2 - pedestal
        gamma = lower_bound(gamma_v, self.reparam_offset) ** 2 - pedestal
        return beta, gamma


class SubpelConv(nn.Module):
    """3x3 convolution to `features * r^2` channels, then pixel shuffle by r.

    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an
    Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016.
    """

    features: int
    factor: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = Conv2d(self.features * self.factor**2, 3, dtype=self.dtype, name="conv")(x)
        return pixel_shuffle(y, self.factor)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with LeakyReLU and a skip (1x1 when widths differ).

    Cheng et al., "Learned Image Compression with Discretized Gaussian Mixture
    Likelihoods and Attention Modules", CVPR 2020, Fig. 2.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = leaky_relu(Conv2d(self.features, 3, dtype=self.dtype, name="conv1")(x))
        y = leaky_relu(Conv2d(self.features, 3, dtype=self.dtype, name="conv2")(y))
        skip = x
        if x.shape[-1] != self.features:
            skip = Conv2d(self.features, 1, dtype=self.dtype, name="skip")(x)
        return y + skip


class ResidualBlockWithStride(nn.Module):
    """Down-sampling residual block: strided 3x3, 3x3, GDN, 1x1 strided skip."""

    features: int
    stride: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = leaky_relu(Conv2d(self.features, 3, self.stride, dtype=self.dtype, name="conv1")(x))
        y = GDN(dtype=self.dtype, name="gdn")(Conv2d(self.features, 3, dtype=self.dtype, name="conv2")(y))
        skip = x
        if self.stride != 1 or x.shape[-1] != self.features:
            skip = Conv2d(self.features, 1, self.stride, dtype=self.dtype, name="skip")(x)
        return y + skip


class ResidualBlockUpsample(nn.Module):
    """Up-sampling residual block: sub-pixel conv, 3x3, inverse GDN, sub-pixel skip."""

    features: int
    factor: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = leaky_relu(SubpelConv(self.features, self.factor, self.dtype, name="subpel_conv")(x))
        y = Conv2d(self.features, 3, dtype=self.dtype, name="conv")(y)
        y = GDN(inverse=True, dtype=self.dtype, name="igdn")(y)
        return y + SubpelConv(self.features, self.factor, self.dtype, name="upsample")(x)


class AttentionBlock(nn.Module):
    """Simplified attention module of Cheng 2020 (Fig. 3, without the non-local block).

    Two trunks of three residual units (1x1 -> 3x3 -> 1x1 at half width); the
    second ends in a 1x1 convolution and a sigmoid that gates the first:
    `x + a(x) * sigmoid(b(x))`.
    """

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[-1]

        def residual_unit(h: jax.Array, name: str) -> jax.Array:
            t = jax.nn.relu(Conv2d(n // 2, 1, dtype=self.dtype, name=f"{name}_conv1")(h))
            t = jax.nn.relu(Conv2d(n // 2, 3, dtype=self.dtype, name=f"{name}_conv2")(t))
            t = Conv2d(n, 1, dtype=self.dtype, name=f"{name}_conv3")(t)
            return jax.nn.relu(t + h)

        a = x
        for i in range(3):
            a = residual_unit(a, f"a{i}")
        b = x
        for i in range(3):
            b = residual_unit(b, f"b{i}")
        b = Conv2d(n, 1, dtype=self.dtype, name="b_out")(b)
        return x + a * jax.nn.sigmoid(b)
