"""Entropy models: they score given values; callers decide what is quantized.

- `DeepFactorized`: the fully factorized density of z, Ballé, Minnen, Singh,
  Hwang, Johnston, "Variational Image Compression with a Scale Hyperprior",
  ICLR 2018, Appendix 6.1 (a per-channel monotone CDF built from softplus
  matrices, biases and tanh gates).
- `GaussianMixtureConditional` (and `gaussian_conditional`, K = 1) for y: the
  probability mass of the unit interval around each value,
  `P(v) = sum_k w_k [Phi((v + 1/2 - mu_k) / sigma_k) - Phi((v - 1/2 - mu_k) / sigma_k)]`
  (Minnen 2018 Eq. (2) with K = 1; Cheng 2020 Eq. (5) for the mixture).

Differences of CDFs are taken in the tail that avoids cancellation: for a
symmetric density at distance |v - mu| from the centre, the mass is
`Phi((1/2 - |v - mu|) / s) - Phi((-1/2 - |v - mu|) / s)`, two small numbers
rather than two numbers close to 1. Likelihoods are lower-bounded (default
1e-9) with `ops.lower_bound`, so a hopeless outlier costs ~30 bits and keeps a
gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mscm_jax.model.ops import lower_bound, standard_normal_cdf

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11


def bits_from_likelihoods(likelihoods: jax.Array) -> jax.Array:
    return -jnp.log2(likelihoods)


# --------------------------------------------------------------------------
# Deep factorized density (z).
# --------------------------------------------------------------------------

FactorizedParams = dict[str, Any]


def factorized_logits_cumulative(params: FactorizedParams, x: jax.Array) -> jax.Array:
    """Logit of the CDF of each channel at x; x is (C, N), the result (C, N).

    Ballé 2018, Appendix 6.1, Eq. (8)-(10): `f_k(x) = g_k(H_k x + b_k)` with
    `H_k = softplus(matrix_k)` (monotone), `g_k(x) = x + tanh(a_k) tanh(x)`.
    """
    num_layers = sum(1 for k in params if k.startswith("matrix"))
    logits = x[:, None, :]
    for i in range(num_layers):
        logits = jnp.matmul(jax.nn.softplus(params[f"matrix{i}"]), logits) + params[f"bias{i}"]
        if i < num_layers - 1:
            logits = logits + jnp.tanh(params[f"factor{i}"]) * jnp.tanh(logits)
    return logits[:, 0, :]


def factorized_likelihood(params: FactorizedParams, values: jax.Array) -> jax.Array:
    """Mass of [v - 1/2, v + 1/2] under each channel's density; values (..., C).

    The CDF difference is taken on the side of the median where both CDF
    values are small (flip the sign of the logits when both are above 0).
    """
    shape = values.shape
    x = values.reshape(-1, shape[-1]).T
    lower = factorized_logits_cumulative(params, x - 0.5)
    upper = factorized_logits_cumulative(params, x + 0.5)
    sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0))
    mass = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
    return mass.T.reshape(shape)


def factorized_quantile(params: FactorizedParams, logit: float = 0.0, iters: int = 60) -> jax.Array:
    """(C,) value where each channel's CDF equals sigmoid(logit); logit 0: median.

    Bisection on the monotone CDF, from a bracket wide enough for any trained
    model ([-2^20, 2^20]); 60 halvings reach float32 resolution.
    """
    channels = params["matrix0"].shape[0]
    lo = jnp.full((channels,), -(2.0**20))
    hi = jnp.full((channels,), 2.0**20)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = factorized_logits_cumulative(params, mid[:, None])[:, 0] > logit
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (lo + hi)


class DeepFactorized(nn.Module):
    """Flax holder of the factorized density's parameters (CompressAI layout).

    `matrix{i}` is (C, f_{i+1}, f_i), `bias{i}` and `factor{i}` (C, f_{i+1}, 1),
    with filters (1, 3, 3, 3, 1) by default (CompressAI's `EntropyBottleneck`
    has one more: `filters=(3, 3, 3, 3)`), initialized so that the density
    starts roughly uniform over [-init_scale, init_scale].

    `stored_median`: the centre of z's quantization grid is a parameter
    `median` (C,) instead of the density's median found by bisection. CompressAI
    rounds z around its learned `quantiles[:, 0, 1]`, which approximates the
    median only as well as its auxiliary loss converged; imported checkpoints
    keep it so that z_hat is theirs. The rate is unaffected by the choice.
    """

    channels: int
    filters: tuple[int, ...] = (3, 3, 3)
    init_scale: float = 10.0
    stored_median: bool = False

    def setup(self):
        widths = (1, *self.filters, 1)
        scale = self.init_scale ** (1.0 / (len(widths) - 1))
        params = {}
        for i in range(len(widths) - 1):
            shape = (self.channels, widths[i + 1], widths[i])
            init_value = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            params[f"matrix{i}"] = self.param(f"matrix{i}", nn.initializers.constant(init_value), shape)
            params[f"bias{i}"] = self.param(
                f"bias{i}",
                lambda key, s: jax.random.uniform(key, s, jnp.float32, -0.5, 0.5),
                (*shape[:2], 1),
            )
            if i < len(widths) - 2:
                params[f"factor{i}"] = self.param(f"factor{i}", nn.initializers.zeros, (*shape[:2], 1))
        self.density_params = params
        if self.stored_median:
            self.median_param = self.param("median", nn.initializers.zeros, (self.channels,))

    def __call__(self, values: jax.Array) -> jax.Array:
        return self.likelihood(values)

    def likelihood(self, values: jax.Array) -> jax.Array:
        mass = factorized_likelihood(self.density_params, values)
        return lower_bound(mass, LIKELIHOOD_BOUND)

    def median(self) -> jax.Array:
        if self.stored_median:
            return jax.lax.stop_gradient(self.median_param)
        return factorized_quantile(jax.lax.stop_gradient(self.density_params), 0.0)

    def coding_reach(self, tail_mass: float) -> jax.Array:
        """The farthest, over channels, that the quantiles of `tail_mass` lie from the median."""
        median, logit = self.median(), math.log(tail_mass)
        low = factorized_quantile(self.density_params, logit)
        high = factorized_quantile(self.density_params, -logit)
        return jnp.max(jnp.maximum(median - low, high - median))

    def coding_pmf(self, half_width: int) -> jax.Array:
        """(C, 2T + 1) masses of the bins `median + q`, q = -T..T; the end bins hold the tails."""
        median = self.median()
        inner = jnp.arange(1 - half_width, half_width, dtype=jnp.float32)[:, None]
        mass = factorized_likelihood(self.density_params, median[None, :] + inner).T  # (C, 2T - 1)
        # factorized_logits_cumulative takes (channels, samples).
        low = jax.nn.sigmoid(
            factorized_logits_cumulative(self.density_params, (median - half_width + 0.5)[:, None])
        )
        high = jax.nn.sigmoid(
            -factorized_logits_cumulative(self.density_params, (median + half_width - 0.5)[:, None])
        )
        return jnp.concatenate([low, mass, high], axis=1)


# --------------------------------------------------------------------------
# Conditional models of y.
# --------------------------------------------------------------------------


def gaussian_mass(values: jax.Array, means: jax.Array, scales: jax.Array) -> jax.Array:
    """Mass of [v - 1/2, v + 1/2] under N(mean, scale^2), tail-safe."""
    distance = jnp.abs(values - means)
    upper = standard_normal_cdf((0.5 - distance) / scales)
    lower = standard_normal_cdf((-0.5 - distance) / scales)
    return upper - lower


@dataclasses.dataclass(frozen=True)
class ConditionalParams:
    """Per-element distribution parameters; components on the last axis (K),
    or on the first (`GaussianMixtureConditional.split_components_first`)."""

    means: jax.Array
    scales: jax.Array
    weights: jax.Array


jax.tree_util.register_dataclass(
    ConditionalParams, data_fields=["means", "scales", "weights"], meta_fields=[]
)


@dataclasses.dataclass(frozen=True)
class GaussianMixtureConditional:
    """K-component Gaussian mixture per latent element (Cheng 2020, Eq. (5)).

    The entropy-parameter network emits 3KM channels in three equal chunks,
    scales, means, weights; inside each chunk component k owns channels
    k*M .. (k+1)*M (the MSCM authors' layout). Weights are a softmax over K.
    K = 1 is a single Gaussian with chunks (scales, means), as CompressAI's
    mean-scale models emit them.
    """

    num_components: int = 3
    scale_bound: float = SCALE_BOUND
    likelihood_bound: float = LIKELIHOOD_BOUND

    def num_parameter_channels(self, latent_channels: int) -> int:
        chunks = 2 if self.num_components == 1 else 3
        return chunks * self.num_components * latent_channels

    def split(self, raw: jax.Array) -> ConditionalParams:
        """Network output (..., P) -> parameters of shape (..., M, K)."""
        return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), self.split_components_first(raw))

    def split_components_first(self, raw: jax.Array) -> ConditionalParams:
        """Network output (..., P) -> parameters of shape (K, ..., M).

        The layout a coder wants (each component's values contiguous). The
        softmax over K is written as elementwise operations on the K slices,
        which XLA:CPU runs many times faster than a reduction over a short axis.
        """
        k = self.num_components
        chunks = 2 if k == 1 else 3
        m = raw.shape[-1] // (chunks * k)
        parts = jnp.moveaxis(raw.astype(jnp.float32).reshape(*raw.shape[:-1], chunks, k, m), (-3, -2), (0, 1))
        scales = lower_bound(parts[0], self.scale_bound)
        means = parts[1]
        if k == 1:
            return ConditionalParams(means=means, scales=scales, weights=jnp.ones_like(means))
        top = functools.reduce(jnp.maximum, parts[2])
        exps = jnp.exp(parts[2] - top)
        return ConditionalParams(
            means=means, scales=scales, weights=exps / functools.reduce(operator.add, exps)
        )

    def likelihood(self, values: jax.Array, params: ConditionalParams) -> jax.Array:
        """P(values) for values (..., M), lower-bounded."""
        mass = gaussian_mass(values[..., None], params.means, params.scales)
        mass = jnp.sum(params.weights * mass, axis=-1)
        return lower_bound(mass, self.likelihood_bound)

    def mean(self, params: ConditionalParams) -> jax.Array:
        """The mixture's mean (..., M): the centre that "y - mean" rounding uses."""
        return jnp.sum(params.weights * params.means, axis=-1)


def gaussian_conditional(
    scale_bound: float = SCALE_BOUND, likelihood_bound: float = LIKELIHOOD_BOUND
) -> GaussianMixtureConditional:
    """A single Gaussian per element (Minnen 2018): the mixture with K = 1."""
    return GaussianMixtureConditional(1, scale_bound, likelihood_bound)
