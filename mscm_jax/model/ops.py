"""Elementwise and layout ops shared by layers, entropy models and coders."""

from __future__ import annotations

import enum
import math

import jax
import jax.numpy as jnp


@jax.custom_vjp
def lower_bound(x: jax.Array, bound: float | jax.Array) -> jax.Array:
    """`max(x, bound)` whose gradient still pushes `x` back above the bound.

    Ballé et al., "Density Modeling of Images using a Generalized Normalization
    Transformation", ICLR 2016, Sec. 3 (the reparametrization trick for GDN):
    the gradient passes where `x >= bound`, or where it would increase `x`.
    Without this, a parameter stuck below its bound would never recover.
    """
    return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
    return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(res, g):
    x, bound = res
    pass_through = (x >= bound) | (g < 0)
    return (jnp.where(pass_through, g, 0.0).astype(x.dtype), jnp.zeros_like(bound))


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


class QuantizationMode(str, enum.Enum):
    """How continuous values become (stand-ins for) integers.

    NOISE: additive U(-1/2, 1/2) noise, the differentiable training proxy
      (Ballé et al., "End-to-end Optimized Image Compression", ICLR 2017).
    ROUND: hard rounding, what the coder does.
    STE: rounding in the forward pass, identity gradient (straight-through).
    """

    NOISE = "noise"
    ROUND = "round"
    STE = "ste"


def quantize(
    x: jax.Array,
    mode: QuantizationMode,
    offset: jax.Array | float = 0.0,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Quantizes `x` on the integer grid shifted by `offset`.

    Returns `round(x - offset) + offset` (ROUND), the same with an identity
    gradient (STE), or `x + u` with `u ~ U(-1/2, 1/2)` (NOISE, needs `rng`).
    """
    mode = QuantizationMode(mode)
    if mode is QuantizationMode.NOISE:
        if rng is None:
            raise ValueError("quantization mode 'noise' needs a random key")
        return x + jax.random.uniform(rng, x.shape, x.dtype, -0.5, 0.5)
    rounded = jnp.round(x - offset) + offset
    if mode is QuantizationMode.ROUND:
        return rounded
    return x + jax.lax.stop_gradient(rounded - x)


def standard_normal_cdf(x: jax.Array) -> jax.Array:
    """Phi(x) through erfc, accurate far into the lower tail."""
    return 0.5 * jax.scipy.special.erfc(-x / math.sqrt(2.0))


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Depth-to-space with PyTorch's `PixelShuffle` channel order (NHWC).

    Output channel c at sub-position (i, j) reads input channel
    `c * factor**2 + i * factor + j`, as `torch.nn.PixelShuffle` does for NCHW,
    so sub-pixel convolution weights import without reordering.
    """
    b, h, w, c = x.shape
    r = factor
    if c % (r * r):
        raise ValueError(f"pixel_shuffle needs channels divisible by {r * r}, got {c}")
    x = x.reshape(b, h, w, c // (r * r), r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c // (r * r))


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Pads (B, H, W, C) at the bottom/right by edge replication to a multiple.

    Edge replication (rather than zeros) avoids an artificial step that would
    cost bits; the caller crops the reconstruction back to (H, W).
    """
    h, w = x.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")


INT8_SPLIT_MARGIN = 256  # |256 hi| <= |x| + 256: the bound `integer_dot`'s partial products add


def integer_dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """Exact int32 product of integers x (..., I), |x| < 2^15, and int8 weights w (I, O).

    An int8 `x` is one int8 x int8 product, the fast integer product of CPUs,
    GPUs and TPUs alike (an int16 x int8 one is not). Wider inputs are two:
    x = 256 hi + lo + 128 with hi = x >> 8 and lo = (x & 255) - 128 both int8,
    so x.w = 256 (hi.w) + lo.w + 128 sum(w). Every partial sum stays within
    sum|w| (max|x| + INT8_SPLIT_MARGIN), the bound the integer path proves.
    """
    dims = (((x.ndim - 1,), (0,)), ((), ()))

    def dot(a):
        return jax.lax.dot_general(a, w, dims, preferred_element_type=jnp.int32)

    if x.dtype == jnp.int8:
        return dot(x)
    x = x.astype(jnp.int32)
    hi = (x >> 8).astype(jnp.int8)
    lo = ((x & 255) - 128).astype(jnp.int8)
    return dot(hi) * 256 + (dot(lo) + 128 * jnp.sum(w, axis=0, dtype=jnp.int32))
