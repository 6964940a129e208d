"""The composed model: odd sizes, rates, rounding conventions, shape contracts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.model.compression_model import (
    CompressionModel,
    ModelConfig,
    init_model,
    init_params,
    model_fingerprint,
)
from mscm_jax.model.context import EntropyParameters
from mscm_jax.model.entropy_models import gaussian_mass
from mscm_jax.model.transforms import TRANSFORMS, spread_latents

ODD_IMAGE = (67, 101)  # padded to 128 x 128: an 8 x 8 latent, not divisible by 3.


def _image(shape=ODD_IMAGE, batch=2, seed=0):
    # Smooth random content, so that a fresh model's latent is not all zeros.
    coarse = jax.random.uniform(jax.random.PRNGKey(seed), (batch, 5, 7, 3))
    return jax.image.resize(coarse, (batch, *shape, 3), "linear")


def _loss_and_result(model):
    def loss(params, x, key):
        result = model.apply(params, x, "train", rngs={"noise": key})
        mse = jnp.mean((result.x_hat - x) ** 2)
        return 0.01 * 255**2 * mse + result.bpp.mean(), result

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.fixture(scope="module")
def mbt_mscm3x3():
    config = ModelConfig(transform="mbt2018", N=8, M=8, num_mixtures=3, schedule="mscm3x3")
    model, params = init_model(config, jax.random.PRNGKey(0))
    return config, model, params


def test_odd_image_size_end_to_end(mbt_mscm3x3):
    _config, model, params = mbt_mscm3x3
    x = _image()
    (loss, train), grads = _loss_and_result(model)(params, x, jax.random.PRNGKey(1))
    assert train.x_hat.shape == x.shape
    assert train.y_likelihoods.shape == (2, 8, 8, 8) and train.z_likelihoods.shape == (2, 2, 2, 8)
    assert np.isfinite(float(loss)) and (np.asarray(train.bpp) > 0).all()
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    # Every term of the loss reaches its parameters: distortion g_a and g_s, y's rate
    # h_a, h_s and the context, z's rate the factorized density.
    for group, g in grads["params"].items():
        assert max(float(jnp.abs(leaf).max()) for leaf in jax.tree_util.tree_leaves(g)) > 0, group
    # Stage s's context weights (set s - 1) learn exactly at the taps that are context for it.
    plan = model.bind(params).context.plan(8, 8)
    kernel_grads = np.abs(np.asarray(grads["params"]["context"]["context_kernel"])).sum((3, 4))
    for s in range(1, plan.num_stages):
        context_taps = plan.tap_mask[s][plan.valid[s]].any(axis=0).reshape(5, 5)
        np.testing.assert_array_equal(kernel_grads[plan.weight_index[s]] > 0, context_taps)

    result = jax.jit(lambda p, x: model.apply(p, x, "eval"))(params, x)
    y_hat = np.asarray(result.y_hat)
    np.testing.assert_array_equal(y_hat, np.round(y_hat))
    # Rate: only the 8 x 8 real latent positions count, each in exactly one stage.
    y_bits = -np.log2(np.asarray(result.y_likelihoods)).sum((1, 2, 3))
    np.testing.assert_allclose(np.asarray(result.bits_per_stage).sum(1), y_bits, rtol=1e-5)
    assert result.bits_per_stage.shape == (2, 9)
    total = (y_bits + np.asarray(result.z_bits)) / (ODD_IMAGE[0] * ODD_IMAGE[1])
    np.testing.assert_allclose(np.asarray(result.bpp), total, rtol=1e-5)


def test_parameter_tree_contract(mbt_mscm3x3):
    config, _, params = mbt_mscm3x3
    tree = params["params"]
    assert set(tree) == {"g_a", "g_s", "h_a", "h_s", "entropy_bottleneck", "context"}
    m = config.M
    assert tree["context"]["context_kernel"].shape == (8, 5, 5, m, 2 * m)  # 9 stages - 1
    net = tree["context"]["entropy_parameters"]
    assert [net[f"dense{i}"]["kernel"].shape for i in range(3)] == [
        (4 * m, m * 10 // 3), (m * 10 // 3, m * 8 // 3), (m * 8 // 3, 9 * m),
    ]  # fmt: skip


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transform_family_geometry_is_the_transforms(transform):
    """The strides a family declares are those of its transforms, on a size divisible by neither."""
    config = ModelConfig(transform=transform, N=4, M=4, num_mixtures=1, schedule="hyperprior")
    model = CompressionModel(config)
    params = jax.eval_shape(lambda key: init_params(model, key), jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((1, 100, 140, 3), jnp.float32)
    y = jax.eval_shape(lambda p, x: model.apply(p, x, method=CompressionModel.analysis), params, x)
    z = jax.eval_shape(lambda p, y: model.apply(p, y, method=CompressionModel.hyper_analysis), params, y)
    assert (
        (y.shape[1:3], z.shape[1:3]) == config.transform_family.latent_shapes(100, 140) == ((8, 12), (2, 3))
    )
    # spread_latents scales the analysis' last convolution (a layer of its parameters) and only it.
    layer = config.transform_family.analysis_output
    ones = jax.tree_util.tree_map(lambda s: np.ones(s.shape, s.dtype), params)
    spread = spread_latents(ones, transform, 40.0)
    for path, leaf in jax.tree_util.tree_flatten_with_path(spread)[0]:
        scaled = path[:3] == tuple(jax.tree_util.DictKey(k) for k in ("params", "g_a", layer))
        np.testing.assert_array_equal(leaf, 40.0 if scaled else 1.0)
    assert all((leaf == 1).all() for leaf in jax.tree_util.tree_leaves(ones))


def test_model_fingerprint_names_config_and_every_parameter(mbt_mscm3x3):
    config, _, params = mbt_mscm3x3
    fingerprint = model_fingerprint(config, params)
    assert fingerprint == model_fingerprint(config, jax.tree_util.tree_map(np.asarray, params))
    other = ModelConfig.from_dict({**config.to_dict(), "schedule": "mscm2x2"})
    assert model_fingerprint(other, params) != fingerprint
    changed = jax.tree_util.tree_map(lambda a: a, params)
    changed["params"]["h_s"]["conv2"]["bias"] = changed["params"]["h_s"]["conv2"]["bias"].at[0].add(1e-6)
    assert model_fingerprint(config, changed) != fingerprint


def test_hyperprior_schedule_is_a_plain_mean_scale_hyperprior():
    config = ModelConfig(transform="mbt2018", N=8, M=8, num_mixtures=1, schedule="hyperprior")
    model, params = init_model(config, jax.random.PRNGKey(2))
    x = _image(batch=1, seed=3)

    def reference(p, x):
        bound = model.bind(p)
        y = bound.analysis(x)
        median = bound.z_median()
        z_hat = jnp.round(bound.hyper_analysis(y) - median) + median
        hyper = bound.hyper_synthesis(z_hat)
        # The network sees only the hyperprior: keep the first 2M input rows.
        net = jax.tree_util.tree_map(lambda a: a, p["params"]["context"]["entropy_parameters"])
        net["dense0"] = {**net["dense0"], "kernel": net["dense0"]["kernel"][: 2 * config.M]}
        raw = EntropyParameters(config.M, 2 * config.M).apply({"params": net}, hyper)
        scales, means = jnp.split(raw, 2, -1)
        y_hat = jnp.round(y)
        return jnp.maximum(gaussian_mass(y_hat, means, jnp.maximum(scales, 0.11)), 1e-9)

    expected = jax.jit(reference)(params, x)
    got = jax.jit(lambda p, x: model.apply(p, x, "eval"))(params, x)
    np.testing.assert_allclose(np.asarray(got.y_likelihoods), np.asarray(expected), rtol=1e-4, atol=1e-7)
    assert "context_kernel" not in params["params"]["context"]  # no context weights, no parameter


def test_rounding_y_minus_mean_is_decoder_consistent():
    config = ModelConfig(
        transform="mbt2018", N=8, M=8, num_mixtures=1, schedule="mscm2x2", rounding="y_minus_mean"
    )
    model, params = init_model(config, jax.random.PRNGKey(4))
    # A fresh model predicts means ~0; give the means an offset and a context dependence.
    context = params["params"]["context"]
    bias = context["entropy_parameters"]["dense2"]["bias"]
    context["context_kernel"] = context["context_kernel"] * 30.0
    context["entropy_parameters"]["dense2"]["bias"] = bias + jax.random.normal(
        jax.random.PRNGKey(6), bias.shape
    )
    x = _image(shape=(64, 64), batch=1, seed=5)

    def check(p, x):
        bound = model.bind(p)
        result = bound(x, "eval")
        y = bound.analysis(x)
        median = bound.z_median()
        hyper = bound.hyper_synthesis(jnp.round(bound.hyper_analysis(y) - median) + median)
        params = bound.conditional.split(bound.context.all_stages(result.y_hat, hyper))
        return result.y_hat, y, bound.conditional.mean(params)

    y_hat, y, mean = jax.jit(check)(params, x)
    offset = np.asarray(y_hat - mean)
    # y_hat = round(y - mean) + mean with the means the decoder computes.
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-4)
    assert np.abs(np.asarray(y_hat - y)).max() <= 0.5 + 1e-4
    # Not vacuous: the means are far from integers and differ from element to element.
    frac = np.abs(np.asarray(mean) - np.round(np.asarray(mean)))
    assert frac.max() > 0.2 and np.asarray(mean).std() > 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"transform": "bls2017"}, "unknown transform"),
        ({"schedule": "zigzag"}, "unknown schedule"),
        ({"schedule": "[[0, 2], [2, 3]]"}, "0..S-1"),
        ({"rounding": "z"}, "rounding"),
        ({"rounding": "y_minus_mean", "num_mixtures": 3}, "single Gaussian"),
        ({"N": 0}, "positive integer"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
    ],
)
def test_config_errors_are_clear(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = ModelConfig(schedule="[[0, 2], [3, 1]]", N=16, M=16)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict({"schedule": [[0, 1], [1, 0]]}).schedule_obj.num_stages == 2
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"latent_channels": 3})


def test_cheng2020_shapes_and_bfloat16_transforms():
    config = ModelConfig(
        transform="cheng2020-attn", N=8, M=8, schedule="checkerboard", compute_dtype="bfloat16"
    )
    model = CompressionModel(config)
    x = _image(shape=(40, 70), batch=1)
    params = init_params(model, jax.random.PRNGKey(0))
    result = jax.jit(lambda p, x: model.apply(p, x, "train", rngs={"noise": jax.random.PRNGKey(1)}))(
        params, x
    )
    assert result.x_hat.shape == (1, 40, 70, 3) and result.x_hat.dtype == jnp.float32
    assert result.y_likelihoods.dtype == jnp.float32 and result.y_likelihoods.shape == (1, 4, 8, 8)
    assert np.isfinite(np.asarray(result.bpp)).all()
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))


def test_public_api_is_importable_from_the_package():
    import mscm_jax
    from mscm_jax.coding.codec import Codec

    assert all(getattr(mscm_jax, name) is not None for name in mscm_jax.__all__)
    assert mscm_jax.Codec is Codec
