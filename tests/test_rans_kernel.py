"""The Pallas decode kernels: the XLA loop's symbols and states, and Triton programs for GPUs."""

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


def _tables(rng, channels=6, half_width=8):
    """z's kind of models: per-channel CDF tables (N, 2T + 2), rows chosen per symbol."""
    pmf = rng.dirichlet(np.full(2 * half_width + 1, 0.3), channels)
    return jnp.asarray(integer_cdf.quantize_pmf(pmf)), half_width


def _table_coder(cdfs, half_width):
    """The XLA coder's (cdf_fn, half_width_fn) with the tables' known T, not one derived from them."""
    return (lambda model, edge: integer_cdf.table_cdf(cdfs, model[0], edge),
            lambda model: jnp.full(model.shape[1:], half_width, jnp.int32))  # fmt: skip


def test_the_table_kernel_decodes_what_the_xla_encoder_wrote():
    rng = np.random.default_rng(5)
    (cdfs, half_width), size = _tables(rng), 45
    rows = jnp.asarray(rng.integers(0, len(cdfs), (1, size)), jnp.int32)
    offsets = rng.integers(-half_width, half_width + 1, size).astype(np.int32)
    offsets[::11] = [40, -300, 9, -9, 2**20]  # escapes, beyond the tables
    encoder = rans.new_encoder(LANES, rans.max_words(size))
    state = rans.encode_segment(encoder, jnp.asarray(offsets), rows, *_table_coder(cdfs, half_width))
    buffer, first = rans.flush(state)
    words = buffer[int(first) :]
    decode = jax.jit(rans_kernel.decode_table_segment)
    state, decoded = decode(rans.new_decoder(words, LANES), words, rows, cdfs)
    np.testing.assert_array_equal(np.asarray(decoded), offsets)
    assert bool(rans.decoder_finished(state, words))


def test_the_kernels_lower_to_one_triton_program_each_for_gpus():
    """Triton's rules (power-of-two arrays, the operations it lowers) are checked here, without a GPU."""
    params, words = jnp.asarray(_stream()[1][1][0]), jnp.zeros(256, jnp.uint16)  # 32 lanes, as the codec's
    cdfs, _ = _tables(np.random.default_rng(0))
    rows = jnp.zeros((1, 100), jnp.int32)

    def decode(state, words, params, rows, cdfs):
        state, y = rans_kernel.decode_mixture_segment(state, words, params)
        return rans_kernel.decode_table_segment(state, words, rows, cdfs), y

    exported = jax.export.export(
        jax.jit(decode), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(rans.new_decoder(words, 32), words, params, rows, cdfs)  # fmt: skip
    module = exported.mlir_module()
    assert module.count("custom_call @__gpu$xla.gpu.triton") == 2
    assert module.count("num_warps = 1 : i32") == 2  # 32 lanes: one warp, one lane per thread
    four_warps = jax.export.export(
        jax.jit(functools.partial(rans_kernel.decode_table_segment, num_warps=4)), platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(rans.new_decoder(words, 32), words, rows, cdfs)  # fmt: skip
    assert "num_warps = 4 : i32" in four_warps.mlir_module()
