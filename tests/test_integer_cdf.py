"""The integer coding model: exact CDFs against an independent NumPy int64 implementation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.coding import integer_cdf

K = 3


def _reference_cdf(params: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The format's mixture CDF written out with int64 floor divisions instead of shifts."""
    p = params.astype(np.int64)
    k = (len(p) - 2) // 3
    t = 2 ** p[1]
    bins = 2 * t + 1
    position = (edge - t) * 1024 - 512
    mass = np.zeros(np.broadcast_shapes(edge.shape, p[1].shape), np.int64)
    phi = integer_cdf.PHI_TABLE.astype(np.int64)
    for c in range(k):
        limit = integer_cdf.MAX_DISTANCE_TABLE[p[2 + k + c]].astype(np.int64)
        distance = np.minimum(np.maximum(position - p[2 + c], -limit), limit)
        arg = (distance * integer_cdf.INV_SCALE_TABLE[p[2 + k + c]]) // 2**14  # 2^-12
        u = np.clip(arg + 8 * 4096, 0, 16 * 4096)
        low = phi[u // 64]
        mass += p[2 + 2 * k + c] * (low + (phi[u // 64 + 1] - low) * (u % 64) // 64)
    cdf = mass // 2**14
    quantized = cdf - (cdf * bins + 65535) // 65536 + edge
    return np.where(edge <= 0, 0, np.where(edge >= bins, 65536, quantized))


def _random_params(rng, count: int) -> np.ndarray:
    means = rng.normal(0, 4, (K, count)).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(400), (K, count))).astype(np.float32)
    weights = rng.dirichlet(np.ones(K), count).T.astype(np.float32)
    # Edge cases: tiny and huge scales, weights near 0 and 1, means far from the centre.
    scales[:, :4] = [0.01, 0.11, 256, 1e4]  # columns 0..3: each scale in every component
    weights[:, 4:8] = [[1 - 2e-6], [1e-6], [1e-6]]
    means[:, 8:12] = [[-1e6], [1e6], [0.0]]
    return np.asarray(
        integer_cdf.quantize_parameters(*map(jnp.asarray, (means, scales, weights)), round_centre=True)
    )


_cdf_all_edges = jax.jit(lambda p: integer_cdf.mixture_cdf(p, jnp.arange(130)[:, None]))


def test_mixture_cdf_equals_the_int64_reference_and_every_bin_has_mass():
    params = _random_params(np.random.default_rng(0), 2000)
    cdf = np.asarray(_cdf_all_edges(jnp.asarray(params)))  # (130, E)
    reference = _reference_cdf(params, np.arange(130)[:, None])
    np.testing.assert_array_equal(cdf, reference)
    bins = 2 * (1 << params[1]) + 1
    inside = np.arange(130)[:, None] <= bins
    freq = np.diff(cdf, axis=0)
    assert np.all(freq[inside[1:]] >= 1)  # every bin of every alphabet has mass
    assert np.all(cdf[bins, np.arange(cdf.shape[1])] == integer_cdf.TOTAL) and np.all(cdf[0] == 0)


def test_integer_cdf_follows_the_float_mixture():
    """Away from the 2^-16 resolution, the integer CDF is the Gaussian mixture's."""
    rng = np.random.default_rng(1)
    means, scales = rng.normal(0, 2, (K, 500)), rng.uniform(0.5, 8, (K, 500))
    weights = rng.dirichlet(np.ones(K), 500).T
    params = np.asarray(
        integer_cdf.quantize_parameters(*map(jnp.asarray, (means, scales, weights)), round_centre=True)
    )
    cdf = np.asarray(_cdf_all_edges(jnp.asarray(params))) / integer_cdf.TOTAL
    t = 1 << params[1]
    centre = params[0] / 1024
    for e in rng.integers(0, params.shape[1], 40):
        edges = np.arange(1, 2 * t[e] + 1)
        x = centre[e] + edges - t[e] - 0.5
        expected = sum(
            weights[c, e] * 0.5 * np.vectorize(math.erfc)(-(x - means[c, e]) / scales[c, e] / math.sqrt(2))
            for c in range(K)
        )
        np.testing.assert_allclose(cdf[edges, e], expected, atol=2.5e-3)


def test_quantized_parameters_respect_their_grid_and_bounds():
    params = _random_params(np.random.default_rng(2), 500)
    k = K
    weights = params[2 + 2 * k :]
    np.testing.assert_array_equal(weights.sum(0), 2**integer_cdf.WEIGHT_BITS)
    assert weights.min() >= 1
    assert np.all(params[0] % 1024 == 0)  # round_centre: integer centres
    assert np.abs(params[2 : 2 + k]).max() <= integer_cdf.MAX_RELATIVE_MEAN
    log_scales = params[2 + k : 2 + 2 * k]
    assert log_scales.min() >= 0 and log_scales.max() <= integer_cdf.LOG_SCALE_MAX - integer_cdf.LOG_SCALE_MIN
    # T covers 6 scales of every component around its mean (up to the cap).
    t = 1 << params[1]
    sigma = np.exp((log_scales + integer_cdf.LOG_SCALE_MIN) / 1024)
    reach = (np.abs(params[2 : 2 + k]) / 1024 + 6 * sigma).max(0)
    assert np.all((t >= np.minimum(reach, 64) - 1e-3) & ((t == 1) | (t / 2 < reach)))


@pytest.mark.parametrize("round_centre", [True, False])
def test_the_centre_is_the_mixture_mean(round_centre):
    means = jnp.asarray([[1.3], [2.9], [-4.0]])
    weights = jnp.asarray([[0.5], [0.25], [0.25]])
    params = np.asarray(integer_cdf.quantize_parameters(means, jnp.ones((3, 1)), weights, round_centre))
    mean = 0.5 * 1.3 + 0.25 * 2.9 - 0.25 * 4.0
    assert params[0, 0] / 1024 == (round(mean) if round_centre else pytest.approx(mean, abs=1e-3))


def test_z_tables_quantize_any_pmf_with_mass_in_every_bin():
    pmf = np.asarray([[1.0, 0, 0, 0, 0], [0.2] * 5, [1e-12, 0.5, 0.5, 1e-12, 0.0]])
    cdf = integer_cdf.quantize_pmf(pmf)
    assert cdf.shape == (3, 6) and cdf.dtype == np.int32
    assert np.all(np.diff(cdf, axis=1) >= 1) and np.all(cdf[:, -1] == integer_cdf.TOTAL)
    np.testing.assert_allclose(np.diff(cdf[1]) / integer_cdf.TOTAL, 0.2, atol=1e-4)


def test_the_fixed_point_tables_are_the_formats():
    assert integer_cdf.tables_digest() == integer_cdf.TABLES_SHA256
    assert (
        integer_cdf.PHI_TABLE[0] == 0
        and integer_cdf.PHI_TABLE[512] == 32768
        and integer_cdf.PHI_TABLE[-2] == 65536
    )
    assert np.all(np.diff(integer_cdf.PHI_TABLE) >= 0)
