"""Range coding of latents: exact round trips for every schedule, corruption detected."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.coding import CodingError, LatentCoder, mixture_pmf
from mscm_jax.data import load_sample, to_float
from mscm_jax.models import Mode, ModelConfig, init_model
from mscm_jax.schedules import BUILTIN_PATTERNS

IMAGE = to_float(load_sample("chelsea"))[:100, :140]  # odd size: a 2 x 3 z, a 8 x 12 latent


@functools.cache
def coder_for(schedule: str, mixtures: int = 3, rounding: str = "y"):
    config = ModelConfig(transform="mbt2018", N=8, M=8, num_mixtures=mixtures, schedule=schedule,
                         rounding=rounding)  # fmt: skip
    model, params = init_model(config, jax.random.PRNGKey(0))
    # A fresh analysis transform outputs ~0; scale it so that symbols span several values.
    params["params"]["g_a"]["conv3"]["kernel"] = params["params"]["g_a"]["conv3"]["kernel"] * 40
    return model, params, LatentCoder(model, params)


@pytest.mark.parametrize("schedule", list(BUILTIN_PATTERNS))
def test_round_trip_is_exact_and_matches_the_model(schedule):
    model, params, coder = coder_for(schedule)
    code, y_encoder = coder.encode(IMAGE)
    y_decoder = coder.decode(code)
    np.testing.assert_array_equal(y_decoder, y_encoder)
    assert np.abs(y_encoder).max() >= 2  # not a trivial all-zero latent
    result = jax.jit(lambda p, x: model.apply(p, x, Mode.EVAL))(params, jnp.asarray(IMAGE)[None])
    np.testing.assert_array_equal(y_decoder, np.asarray(result.y_hat))
    assert len(code.stages) == result.bits_per_stage.shape[1]


def test_round_trip_with_y_minus_mean_rounding():
    _, _, coder = coder_for("checkerboard", 1, "y_minus_mean")
    code, y_encoder = coder.encode(IMAGE)
    np.testing.assert_array_equal(coder.decode(code), y_encoder)
    assert np.abs(y_encoder - np.round(y_encoder)).max() > 0.01  # means really are added back


def test_payload_is_close_to_the_estimate():
    model, params, coder = coder_for("mscm2x2")
    code, _ = coder.encode(IMAGE)
    result = jax.jit(lambda p, x: model.apply(p, x, Mode.EVAL))(params, jnp.asarray(IMAGE)[None])
    estimate = float(result.bpp[0]) * IMAGE.shape[0] * IMAGE.shape[1]
    # Small image: 32-bit stream granularity per stage dominates the difference.
    assert abs(code.payload_bits - estimate) <= 0.15 * estimate + 32 * (1 + len(code.stages))


def test_corrupted_or_swapped_streams_are_errors():
    _, _, coder = coder_for("mscm2x2")
    code, _ = coder.encode(IMAGE)
    stage = max(range(len(code.stages)), key=lambda s: len(code.stages[s].data))
    data = bytearray(code.stages[stage].data)
    data[len(data) // 2] ^= 0x40
    corrupt = dataclasses.replace(code.stages[stage], data=bytes(data))
    stages = [*code.stages[:stage], corrupt, *code.stages[stage + 1 :]]
    with pytest.raises(CodingError):
        coder.decode(dataclasses.replace(code, stages=stages))
    with pytest.raises(CodingError):
        coder.decode(dataclasses.replace(code, stages=code.stages[::-1]))
    with pytest.raises(CodingError, match="stage streams"):
        coder.decode(dataclasses.replace(code, stages=code.stages[:-1]))


def test_mixture_tables_fold_tails_and_sum_to_one():
    means, scales, weights = np.array([[0.3, 5.0]]), np.array([[0.5, 2.0]]), np.array([[0.5, 0.5]])
    pmf = mixture_pmf(-2, 3, means, scales, weights)
    np.testing.assert_allclose(pmf.sum(1), 1.0, rtol=1e-12)
    assert pmf[0, -1] > 0.3  # the component at 5 sits in the last (folded) bin
