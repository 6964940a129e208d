import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtr

from mscm_jax.model.entropy_models import (
    DeepFactorized,
    GaussianMixtureConditional,
    factorized_likelihood,
    factorized_logits_cumulative,
    gaussian_conditional,
    gaussian_mass,
)
from mscm_jax.model.ops import QuantizationMode, lower_bound, quantize

INTEGERS = jnp.arange(-600, 601, dtype=jnp.float32)


def test_gaussian_mass_sums_to_one():
    rng = np.random.default_rng(0)
    means = jnp.asarray(rng.uniform(-20, 20, 8), jnp.float32)
    for scale in (0.11, 0.5, 3.0, 40.0):
        mass = gaussian_mass(INTEGERS[:, None], means[None], jnp.float32(scale))
        np.testing.assert_allclose(np.asarray(mass.sum(0)), 1.0, atol=1e-4)


def test_gaussian_mass_lower_tail_does_not_cancel():
    # 8 standard deviations out: a naive Phi(u) - Phi(l) near 1 gives 0 in float32.
    values = jnp.asarray([8.0, -8.0, 12.0], jnp.float32)
    mass = np.asarray(gaussian_mass(values, 0.0, 1.0))
    distance = np.abs(np.asarray(values, np.float64))
    exact = ndtr(0.5 - distance) - ndtr(-0.5 - distance)
    np.testing.assert_allclose(mass, exact, rtol=1e-3)
    assert mass.min() > 0


@pytest.mark.parametrize("components", [1, 3])
def test_mixture_likelihood_sums_to_one(components):
    model = GaussianMixtureConditional(components)
    m = 5
    raw = jax.random.normal(jax.random.PRNGKey(components), (m * model.num_parameter_channels(1),)) * 3
    params = model.split(raw)
    assert params.means.shape == (m, components)
    np.testing.assert_allclose(np.asarray(params.weights.sum(-1)), 1.0, rtol=1e-6)
    total = model.likelihood(jnp.broadcast_to(INTEGERS[:, None], (INTEGERS.size, m)), params).sum(0)
    # The 1e-9 likelihood bound adds at most 1201e-9.
    np.testing.assert_allclose(np.asarray(total), 1.0, atol=1e-4)


def test_mixture_channel_layout_is_scales_means_weights():
    model = GaussianMixtureConditional(3)
    m = 2
    raw = jnp.arange(3 * 3 * m, dtype=jnp.float32)
    params = model.split(raw)
    # Chunk 0 = scales (channels 0..5), component k owns channels k*M..(k+1)*M.
    np.testing.assert_allclose(np.asarray(params.scales), [[0.11, 2.0, 4.0], [1.0, 3.0, 5.0]], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(params.means), [[6.0, 8.0, 10.0], [7.0, 9.0, 11.0]])
    assert gaussian_conditional().num_parameter_channels(m) == 2 * m


def _trained_like_factorized(channels=4):
    """A factorized density with parameters moved away from their init."""
    module = DeepFactorized(channels)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, channels)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    leaves = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return module, jax.tree_util.tree_unflatten(tree, leaves)


def test_factorized_likelihood_sums_to_one_and_median():
    module, params = _trained_like_factorized()
    lik = module.apply(params, jnp.broadcast_to(INTEGERS[:, None], (INTEGERS.size, 4)))
    np.testing.assert_allclose(np.asarray(lik.sum(0)), 1.0, atol=1e-4)
    median = module.apply(params, method=DeepFactorized.median)
    density = params["params"]
    logits = factorized_logits_cumulative(density, median[:, None])
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(logits)), 0.5, atol=1e-5)


def test_factorized_far_tail_is_positive():
    _module, params = _trained_like_factorized()
    far = jnp.full((1, 4), 60.0)
    mass = factorized_likelihood(params["params"], far)
    assert np.all(np.asarray(mass) > 0) and np.all(np.asarray(mass) < 1e-3)


def test_factorized_parameter_and_gradient_trees():
    module = DeepFactorized(6)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((2, 6)))
    shapes = jax.tree_util.tree_map(jnp.shape, params)["params"]
    assert shapes == {
        "matrix0": (6, 3, 1), "bias0": (6, 3, 1), "factor0": (6, 3, 1),
        "matrix1": (6, 3, 3), "bias1": (6, 3, 1), "factor1": (6, 3, 1),
        "matrix2": (6, 3, 3), "bias2": (6, 3, 1), "factor2": (6, 3, 1),
        "matrix3": (6, 1, 3), "bias3": (6, 1, 1),
    }  # fmt: skip
    # The rate of channel 2 alone: every parameter of channel 2 gets a gradient (no term of
    # the CDF is dropped), and no parameter of another channel does (channels stay apart).
    values = jnp.arange(18.0).reshape(3, 6) / 4 - 2
    grads = jax.grad(lambda p: -jnp.log(module.apply(p, values)[:, 2]).sum())(params)
    for name, g in grads["params"].items():
        g = np.abs(np.asarray(g)).reshape(6, -1)
        assert np.isfinite(g).all() and (g[2] > 0).all(), name
        np.testing.assert_array_equal(np.delete(g, 2, axis=0), 0.0, err_msg=name)


def test_lower_bound_gradient():
    grad = jax.grad(lambda x: (lower_bound(x, 1.0) * jnp.array([1.0, -1.0, 1.0])).sum())
    # Below the bound, the gradient passes only where descent would raise x.
    np.testing.assert_array_equal(np.asarray(grad(jnp.array([0.0, 0.0, 2.0]))), [0.0, -1.0, 1.0])
    np.testing.assert_array_equal(np.asarray(lower_bound(jnp.array([0.0, 2.0]), 1.0)), [1.0, 2.0])


def test_quantization_modes():
    x = jnp.array([0.2, 0.7, -1.6])
    np.testing.assert_array_equal(np.asarray(quantize(x, QuantizationMode.ROUND)), [0.0, 1.0, -2.0])
    np.testing.assert_allclose(np.asarray(quantize(x, "round", offset=0.3)), [0.3, 0.3, -1.7], atol=1e-6)
    ste_grad = jax.grad(lambda x: quantize(x, QuantizationMode.STE).sum())(x)
    np.testing.assert_array_equal(np.asarray(ste_grad), 1.0)
    noisy = quantize(jnp.zeros(1000), QuantizationMode.NOISE, rng=jax.random.PRNGKey(0))
    assert float(jnp.abs(noisy).max()) <= 0.5 and float(noisy.std()) > 0.25
    with pytest.raises(ValueError, match="random key"):
        quantize(x, QuantizationMode.NOISE)
