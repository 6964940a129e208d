"""The integer entropy-parameter path: exact integer layers, bounds, conversion, portable files."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import integer_worker
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from PIL import Image

from mscm_jax.coding import bitstream, integer_cdf, integer_path, model_file
from mscm_jax.coding.codec import Codec
from mscm_jax.coding.model_file import ModelFileError
from mscm_jax.model.compression_model import CompressionModel, ModelConfig, init_model
from mscm_jax.model.schedules import BUILTIN_PATTERNS
from mscm_jax.model.transforms import TRANSFORMS, spread_latents
from mscm_jax.training.data import load_sample

PHOTO = load_sample("chelsea")[:100, :140]
CALIBRATION = [load_sample("astronaut")[:128, :128], load_sample("coffee")[:128, :128]]
WORKER = Path(__file__).parent / "integer_worker.py"


@functools.cache
@functools.cache  # one Codec, compiled once, per configuration for the whole module
def integer_codec(schedule: str = "mscm4x4-paper", transform: str = "cheng2020-attn", rounding: str = "y",
                  mixtures: int = 3) -> Codec:  # fmt: skip
    config = ModelConfig(transform=transform, N=8, M=8, num_mixtures=mixtures, schedule=schedule,
                         rounding=rounding)  # fmt: skip
    _, params = init_model(config, jax.random.PRNGKey(0))
    return Codec(config, spread_latents(params, transform, 40.0)).with_integer_path(CALIBRATION)


# --------------------------------------------------------------------------
# Integer operations against int64 NumPy.
# --------------------------------------------------------------------------


def _reference_linear(x, weight, bias, shift, limit, leaky, zero_point=None, rounded=False):
    """One dense layer in int64 with floor divisions: what `integer_path.linear` must compute."""
    if zero_point is not None:
        x = np.clip(x.astype(np.int64) - zero_point, -127, 127)
    acc = x.astype(np.int64) @ weight.astype(np.int64) + bias
    right = np.maximum(shift, 0)
    left = np.maximum(-shift, 0)
    down = (acc + (2**right) // 2) // 2**right
    up = np.clip(acc, -(limit // 2**left), limit // 2**left) * 2**left
    out = np.clip(np.where(shift >= 0, down, up), -limit, limit)
    return np.where(out >= 0, out, (out * 655 + (32768 if rounded else 0)) // 65536) if leaky else out


def test_integer_dense_layer_equals_int64_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(-32767, 32768, (64, 40)).astype(np.int32)
    weight = rng.integers(-127, 128, (40, 24)).astype(np.int8)
    bias = rng.integers(-(2**20), 2**20, 24).astype(np.int32)
    shift = rng.integers(-6, 25, 24).astype(np.int32)
    limit = np.int32(2**15 - 1)
    layer = integer_path.IntegerLayer(*map(jnp.asarray, (weight, bias, shift, limit)))
    zero_point = rng.integers(-127, 128, 40).astype(np.int32)
    near = np.clip(zero_point + rng.integers(-160, 161, (64, 40)), -32767, 32767).astype(np.int32)
    # int16 inputs and floor (paths of 0.2.0); inputs around zero points, some clipped, and rounding.
    for inputs, int8, zp, rounded in ((x, False, None, False), (near, True, zero_point, True)):
        for leaky in (False, True):
            got = jax.jit(integer_path.linear, static_argnums=(2, 3, 4, 6))(
                inputs, layer, None, "leaky_relu" if leaky else None, int8, zp, rounded
            )
            expected = _reference_linear(inputs, weight, bias, shift, 2**15 - 1, leaky, zp, rounded)
            np.testing.assert_array_equal(np.asarray(got), expected)


def test_activations_read_through_zero_points_keep_the_float_layer():
    """`_fit_activation`: each channel's codes span its calibrated range (one quiet on the
    calibration images is widened), and the consumer's bias absorbs the zero points."""
    rng = np.random.default_rng(1)
    high = rng.uniform(0.5, 8.0, 12)
    low = -0.01 * rng.uniform(0.5, 8.0, 12)
    high[3], low[3] = 0.0, 0.0  # quiet on the calibration images
    weight, bias = rng.normal(0, 0.2, (12, 5)), rng.normal(0, 1, 5)
    exponent, zero_point, q = integer_path._fit_activation(low, high, (weight, bias), cap=24)
    # The quiet channel reads values up to 2^-6 of the widest range; the others up to twice theirs.
    widest, step = np.max(high - low), np.exp2(-exponent.astype(float))
    upper, lower = (zero_point + 127) * step, (zero_point - 127) * step
    margin = (high - low - step) / 2  # one bit of headroom, less half a code for the rounded centre
    assert np.all(upper >= high + margin) and np.all(lower <= low - margin)
    assert zero_point[3] == 0 and widest / 64 <= upper[3] <= widest / 16
    x = rng.uniform(low, high, (200, 12))
    x[:, 3] = rng.uniform(-widest / 128, widest / 128, 200)
    codes = np.round(x * np.exp2(exponent))
    inputs = np.clip(codes - zero_point, -127, 127)
    acc = inputs @ q.weight.astype(np.int64) + q.bias
    expected = (x @ weight + bias) * np.exp2(q.exponent)
    scale = np.abs(expected).max()
    assert np.abs(acc - expected).max() <= 0.02 * scale


def test_integer_log_scale_and_softmax_follow_their_definitions():
    rng = np.random.default_rng(1)
    scale = np.concatenate(
        [rng.integers(integer_cdf.SCALE_FLOOR, 2**24, 5000), [1, integer_cdf.SCALE_FLOOR, 2**24]]
    )
    got = np.asarray(integer_cdf.integer_log_scale(jnp.asarray(scale, jnp.int32))) + integer_cdf.LOG_SCALE_MIN
    ideal = np.log(np.maximum(scale, integer_cdf.SCALE_FLOOR) / 2**16) * 1024
    assert np.abs(got - np.clip(ideal, integer_cdf.LOG_SCALE_MIN, integer_cdf.LOG_SCALE_MAX)).max() <= 1.0
    logits = rng.integers(-(2**12), 2**12, (3, 5000)).astype(np.int32)
    weights = np.asarray(integer_cdf.integer_weights(jnp.asarray(logits)))
    assert np.all(weights >= 1) and np.all(weights.sum(0) == 2**14)
    softmax = np.exp(logits / 256 - (logits / 256).max(0))
    assert np.abs(weights - 2**14 * softmax / softmax.sum(0)).max() <= 4


def test_integer_centre_is_the_exact_rounded_weighted_mean():
    rng = np.random.default_rng(2)
    means = rng.integers(-(2**20), 2**20, (3, 4000)).astype(np.int32)
    logits = rng.integers(-(2**11), 2**11, (3, 4000)).astype(np.int32)
    scales = rng.integers(2**10, 2**20, (3, 4000)).astype(np.int32)
    rows = np.asarray(
        integer_cdf.integer_coding_parameters(*map(jnp.asarray, (means, scales, logits)), False)
    )
    w = rows[2 + 6 : 2 + 9].astype(np.int64)
    expected = (np.sum(w * means, axis=0) + 2**13) // 2**14
    np.testing.assert_array_equal(rows[0], expected)
    np.testing.assert_array_equal(rows[2:5], np.clip(means - expected, -(2**16), 2**16))


# --------------------------------------------------------------------------
# Conversion and bounds.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_hyper_synthesis_steps_describe_the_module(transform):
    config = ModelConfig(transform=transform, N=8, M=8)
    model, params = init_model(config, jax.random.PRNGKey(3))
    z = jax.random.normal(jax.random.PRNGKey(4), (1, 3, 2, 8)) * 4
    expected = model.apply(params, z, method=CompressionModel.hyper_synthesis)
    steps = config.transform_family.hyper_synthesis_steps
    got = integer_path.float_hyper_synthesis(params, steps, z)[-1]
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)


@functools.cache
def trained_codecs(workdir: Path) -> tuple[Codec, Codec]:
    """(float, integer) codecs of the trained fixture: real latents, unlike a fresh initialization's."""
    codec = Codec.load(workdir)
    return codec, codec.with_integer_path(CALIBRATION)


def test_converted_path_is_bounded_and_close_to_the_float_parameters(trained_workdir):
    float_codec, codec = trained_codecs(trained_workdir)
    bounds = integer_path.check_bounds(codec.integer)
    assert max(bounds.values()) < 2**31 and len(bounds) == 3 + 1 + 3
    (_, exact), (_, approx) = float_codec.stage_models(PHOTO), codec.stage_models(PHOTO)
    rows = [
        np.concatenate([np.asarray(p)[:, : int(n)] for p, _, n in stages], axis=1)
        for stages in (exact, approx)
    ]
    k = codec.config.num_mixtures
    error = np.abs(rows[0] - rows[1])
    means, log_scales = error[2 : 2 + k], error[2 + k : 2 + 2 * k]
    # In 2^-10 units (measured: medians 7 and 9, 99th percentiles 63 and 60; with a flooring
    # LeakyReLU before the int8 codes 13 and 17, 999 and 138; with z int8 instead of int16 the
    # means' 99th percentile is 983; without the integer LeakyReLU 390 and 436, 2131 and 2330).
    for error in (means, log_scales):
        assert np.median(error) <= 16 and np.percentile(error, 99) <= 128


def test_int8_inputs_compute_what_the_two_product_split_computes():
    """Every input but z's is int8 (one product each): centred ones give the same results as two
    products, and the activations' are read through zero points."""
    codec = integer_codec()
    path, int8 = codec.integer, integer_path.int8_inputs(codec.integer)
    assert int8 == integer_path.Int8Inputs((False, True, True, True, True), True, (True, True, True))
    assert len(path.hyper_zero_points) == 4 and len(path.network_zero_points) == 2
    y_hat = jnp.asarray(codec.compress(PHOTO).y_hat)[None]
    layout = codec._layout(y_hat.shape[1:3], 0)  # the latent of the image alone
    z = np.random.default_rng(0).integers(-3, 4, (1, *layout.z_shape))
    steps = codec.family.hyper_synthesis_steps

    @functools.partial(jax.jit, static_argnums=2)
    def parameters(stage, kernel, int8):
        hyper = integer_path.hyper_synthesis(path, steps, jnp.asarray(z, jnp.int32), int8)
        return integer_path.stage_parameters(path, layout.plan, stage, y_hat, hyper, kernel, 3, True, int8)

    stage = layout.plan.num_stages - 1  # the most context taps
    args = (stage, layout.kernels[stage])
    np.testing.assert_array_equal(parameters(*args, int8), parameters(*args, integer_path.WIDE_INPUTS))


def test_bounds_refuse_a_layer_that_could_overflow():
    path = integer_codec().integer
    first = path.network[0]
    # Every |w| at the int8 limit and a bias near 2^31: a sum could wrap.
    wide = first._replace(weight=jnp.full_like(first.weight, 127), bias=jnp.full_like(first.bias, 2**31 - 2))
    with pytest.raises(ValueError, match=r"network0.*2\^31"):
        integer_path.check_bounds(path._replace(network=(wide, *path.network[1:])))
    zero_points = path.network_zero_points
    for damaged, match in (((zero_points[0] + 128, zero_points[1]), r"network1: zero points beyond"),
                           ((zero_points[0][:-1], zero_points[1]), r"network1: zero points must be"),
                           (zero_points[:1], "1 network zero point sets for 2")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            integer_path.check_bounds(path._replace(network_zero_points=damaged))


def test_integer_files_round_trip_and_name_their_coder(tmp_path):
    codec = integer_codec("checkerboard", "mbt2018", rounding="y_minus_mean", mixtures=1)
    result = codec.compress(PHOTO)
    assert bitstream.unpack(result.data)[0].coder == bitstream.CODER_RANS_INTEGER
    np.testing.assert_array_equal(codec.decompress(result.data).y_hat, result.y_hat)
    path = tmp_path / "m.mscm-model"
    codec.export(path)
    loaded = Codec.load(path)
    assert loaded.fingerprint == codec.fingerprint != loaded.float_fingerprint
    np.testing.assert_array_equal(loaded.decompress(result.data).y_hat, result.y_hat)
    float_codec = Codec(codec.config, codec.params, codec.z_cdf)
    with pytest.raises(bitstream.FormatError, match="integer path"):
        float_codec.decompress(result.data)


def test_mean_scale_hyperprior_without_parameter_network_round_trips_on_both_paths():
    # CompressAI's mbt2018-mean layout: the hyper-synthesis output is the scales and means.
    config = ModelConfig(transform="mbt2018", N=8, M=8, num_mixtures=1, schedule="hyperprior",
                         rounding="y_minus_mean", entropy_parameter_network=False)  # fmt: skip
    _, params = init_model(config, jax.random.PRNGKey(0))
    float_codec = Codec(config, spread_latents(params, "mbt2018", 40.0))
    for codec in (float_codec, float_codec.with_integer_path(CALIBRATION)):
        result = codec.compress(PHOTO)
        np.testing.assert_array_equal(codec.decompress(result.data).y_hat, result.y_hat)
        assert np.abs(result.y_hat).max() >= 2


def test_an_integer_path_that_could_overflow_is_refused(tmp_path):
    codec = integer_codec("checkerboard", "mbt2018", rounding="y_minus_mean", mixtures=1)
    first = codec.integer.hyper[0]
    wide = first._replace(bias=jnp.full_like(first.bias, 2**31 - 2))
    with pytest.raises(ValueError, match="hyper0"):
        Codec(
            codec.config,
            codec.params,
            codec.z_cdf,
            integer=codec.integer._replace(hyper=(wide, *codec.integer.hyper[1:])),
        )
    path = tmp_path / "m.mscm-model"
    codec.export(path)
    data = path.read_bytes()
    content = serialization.msgpack_restore(data[len(model_file.MAGIC) + 1 :])
    content["integer"]["hyper"]["0"]["bias"] = np.full_like(
        content["integer"]["hyper"]["0"]["bias"], 2**31 - 2
    )
    path.write_bytes(data[: len(model_file.MAGIC) + 1] + serialization.msgpack_serialize(content))
    with pytest.raises(ModelFileError, match="hyper0"):
        Codec.load(path)


# --------------------------------------------------------------------------
# Portable files: encoded with one instruction set, decoded with another.
# --------------------------------------------------------------------------

OTHER_ISA = "--xla_cpu_max_isa=SSE4_2"


def _cross_isa(tmp_path, codecs: dict[str, Codec], photos: list[str]):
    """Encodes under each ISA, decodes under the other; the same bytes, y_hat, pixels within one level.

    This process is the default ISA's side, with the codecs given (compiled
    by earlier tests, at PHOTO's size); one subprocess, limited to SSE4.2,
    loads their model files, encodes its own files and then decodes this side's.
    """
    models = [str(tmp_path / f"{name}.mscm-model") for name in codecs]
    for model, codec in zip(models, codecs.values(), strict=True):
        codec.export(model)
    pairs = [(codec, tmp_path / f"{Path(model).stem}-{photo}", photo)
             for model, codec in zip(models, codecs.values(), strict=True) for photo in photos]  # fmt: skip
    for codec, stem, photo in pairs:
        integer_worker.encode(codec, photo, stem, "default")
    env = dict(os.environ, MSCM_JAX_CACHE_DIR=str(tmp_path / "cache"), XLA_FLAGS=OTHER_ISA)
    run = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), "sse4_2", "default", json.dumps(models),
         json.dumps(photos)],
        capture_output=True, text=True, timeout=1800, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for codec, stem, _ in pairs:
        integer_worker.decode(codec, stem, "default", "sse4_2")
        # Either ISA encodes to the same bytes, and each decodes the other's to the same latent.
        assert Path(f"{stem}.default.mscm").read_bytes() == Path(f"{stem}.sse4_2.mscm").read_bytes()
        for encoder, decoder in (("default", "sse4_2"), ("sse4_2", "default")):
            encoded = np.load(f"{stem}.{encoder}.npz")
            decoded = np.load(f"{stem}.{encoder}-by-{decoder}.npz")
            np.testing.assert_array_equal(decoded["y_hat"], encoded["y_hat"])
            assert np.abs(decoded["image"].astype(int) - encoded["image"].astype(int)).max() <= 1


def test_integer_files_decode_under_another_instruction_set(trained_workdir, tmp_path):
    # The trained model's float path does not survive the change of ISA (its files fail to decode).
    codecs = {
        "trained": trained_codecs(trained_workdir)[1],
        "cheng2020-mscm4x4": integer_codec("mscm4x4-paper", "cheng2020-attn"),
    }
    _cross_isa(tmp_path, codecs, ["chelsea"])


@pytest.mark.slow
def test_integer_files_decode_under_another_instruction_set_every_schedule_and_family(tmp_path):
    codecs = {f"{t}-{s}": integer_codec(s, t) for s in BUILTIN_PATTERNS for t in TRANSFORMS}
    _cross_isa(tmp_path, codecs, ["astronaut", "chelsea", "coffee", "rocket"])


def test_cli_exports_the_integer_path(trained_workdir, tmp_path):
    def cli(*args):
        cmd = [sys.executable, "-m", "mscm_jax.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)

    run = cli("export", str(trained_workdir), "-o", "m.mscm-model", "--integer", "--calibration-images", "1")
    assert run.returncode == 0, run.stderr
    assert "integer path calibrated on 1 images" in run.stdout
    loaded = Codec.load(tmp_path / "m.mscm-model")
    assert loaded.integer is not None and loaded.coder == bitstream.CODER_RANS_INTEGER
    Image.fromarray(load_sample("chelsea")[:40, :56]).save(tmp_path / "crop.png")
    run = cli("compress", "crop.png", "--model", "m.mscm-model", "--no-store")
    assert run.returncode == 0, run.stderr
    assert "files: coder 5 (the integer path)" in run.stdout
    assert bitstream.unpack((tmp_path / "crop.mscm").read_bytes())[0].coder == bitstream.CODER_RANS_INTEGER
    run = cli("estimate", "--integer")
    assert run.returncode == 2 and "--integer needs --model" in run.stderr
