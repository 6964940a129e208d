"""The Pallas decode kernel: the XLA loop's symbols and states, and a Triton program for GPUs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from test_rans import _jax_encode, _segments

from mscm_jax.coding import integer_cdf, rans, rans_kernel

LANES = 4


def _decode_all(decode_segment, words, segments, counts):
    state, out = rans.new_decoder(words, LANES), []
    for params, count in zip(segments, counts, strict=True):
        state, offsets = decode_segment(state, words, params, count)
        out.append(offsets)
    return out, state


def _xla_segment(state, words, params, count):
    return rans.decode_segment(state, words, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, count)


@functools.cache
def _stream():
    """Two segments (36 and 64 symbols, a few escapes, half-widths up to 64) coded by the XLA encoder."""
    segments = _segments(np.random.default_rng(3), (36, 64))
    (buffer, first), _ = _jax_encode(LANES, [tuple(map(jnp.asarray, s)) for s in segments])
    return jnp.asarray(np.asarray(buffer)[int(first) :]), segments


def test_the_kernel_decodes_the_xla_loops_symbols_and_states():
    words, segments = _stream()
    params = [jnp.asarray(p) for p, _ in segments]
    assert max(1 << int(p[1].max()) for p in params) == integer_cdf.MAX_HALF_WIDTH  # the widest search
    assert any((np.abs(q) > (1 << p[1])).any() for p, q in segments)  # escapes
    counts = [len(q) for _, q in segments]
    decode = jax.jit(functools.partial(_decode_all, rans_kernel.decode_mixture_segment))
    decoded, state = decode(words, params, counts)
    for (_, offsets), mine in zip(segments, decoded, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), offsets)
    assert bool(rans.decoder_finished(state, words))
    # Fewer symbols than the segment holds (a stage's padded elements): zeros past the count,
    # and the same state as the XLA loop's.
    short = [9, 7]
    expected, expected_state = jax.jit(functools.partial(_decode_all, _xla_segment))(words, params, short)
    decoded, state = decode(words, params, short)
    for mine, theirs, count in zip(decoded, expected, short, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
        assert not np.asarray(mine)[count:].any()
    np.testing.assert_array_equal(np.asarray(state.x), np.asarray(expected_state.x))
    assert int(state.position) == int(expected_state.position)


def test_the_kernel_lowers_to_one_triton_program_for_gpus():
    """Triton's rules (power-of-two arrays, the operations it lowers) are checked here, without a GPU."""
    params, words = jnp.asarray(_stream()[1][1][0]), jnp.zeros(256, jnp.uint32)  # 32 lanes, as the codec's
    decode = jax.jit(lambda state, words, params: rans_kernel.decode_mixture_segment(state, words, params))
    exported = jax.export.export(
        decode, platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(rans.new_decoder(words, 32), words, params)  # fmt: skip
    assert exported.mlir_module().count("custom_call @__gpu$xla.gpu.triton") == 1
