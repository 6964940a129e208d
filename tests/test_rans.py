"""The JAX rANS coder against a small scalar reference coder of the same stream format."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.coding import integer_cdf, rans

_cdf_tables = jax.jit(lambda p: integer_cdf.mixture_cdf(p, jnp.arange(130)[:, None]).T)  # (E, 130)


# --------------------------------------------------------------------------
# The reference: one lane at a time, plain Python integers.
# --------------------------------------------------------------------------


def _operations(segments, lanes):
    """Every (lane, start, freq) coding operation in decoding order, grouped by sub-step."""
    groups = []
    for cdf, offsets, half_width in segments:
        for first in range(0, len(offsets), lanes):
            main, length, low, high = [], [], [], []
            for lane, i in enumerate(range(first, min(first + lanes, len(offsets)))):
                t, q = int(half_width[i]), int(offsets[i])
                b = min(max(q, -t), t) + t
                main.append((lane, int(cdf[i, b]), int(cdf[i, b + 1] - cdf[i, b])))
                if b in (0, 2 * t):  # escape: 5-bit length, then the low 16 and the high bits
                    value = abs(q) - t + 1
                    bits = value.bit_length() - 1
                    rest = value - (1 << bits)
                    length.append((lane, bits << 11, 1 << 11))
                    low_bits, high_bits = min(bits, 16), bits - min(bits, 16)
                    if low_bits:
                        low.append((lane, (rest & 0xFFFF) << (16 - low_bits), 1 << (16 - low_bits)))
                    if high_bits:
                        high.append((lane, (rest >> 16) << (16 - high_bits), 1 << (16 - high_bits)))
            groups += [main, length, low, high]
    return groups


def reference_encode(segments, lanes):
    states, stream = [1 << 16] * lanes, []
    for group in reversed(_operations(segments, lanes)):
        written = {}
        for lane, start, freq in group:
            x = states[lane]
            if x >= freq << 16:
                written[lane], x = x & 0xFFFF, x >> 16
            states[lane] = ((x // freq) << 16) + x % freq + start
        stream = [written[lane] for lane in sorted(written)] + stream
    return [w for x in states for w in (x >> 16, x & 0xFFFF)] + stream


def reference_decode(words, segments, lanes):
    """Decodes with the segments' tables; returns the offsets and whether the stream ended exactly."""
    states = [(words[2 * i] << 16) | words[2 * i + 1] for i in range(lanes)]
    position, decoded = 2 * lanes, []

    def pop(lane, start, freq):
        nonlocal position
        x = freq * (states[lane] >> 16) + (states[lane] & 0xFFFF) - start
        if x < 1 << 16:
            x, position = (x << 16) | words[position], position + 1
        states[lane] = x

    for cdf, _, half_width in segments:
        out = []
        for first in range(0, len(half_width), lanes):
            lanes_here = range(min(lanes, len(half_width) - first))
            bins = {}
            for lane in lanes_here:
                i, slot = first + lane, states[lane] & 0xFFFF
                b = int(np.searchsorted(cdf[i], slot, side="right")) - 1
                bins[lane] = b
                pop(lane, int(cdf[i, b]), int(cdf[i, b + 1] - cdf[i, b]))
            escapes = {
                lane: None for lane in lanes_here if bins[lane] in (0, 2 * int(half_width[first + lane]))
            }
            for lane in escapes:
                escapes[lane] = [(states[lane] & 0xFFFF) >> 11, 0, 0]
                pop(lane, escapes[lane][0] << 11, 1 << 11)
            for part in (1, 2):
                for lane in escapes:
                    bits = escapes[lane][0]
                    width = min(bits, 16) if part == 1 else bits - min(bits, 16)
                    if width:
                        escapes[lane][part] = (states[lane] & 0xFFFF) >> (16 - width)
                        pop(lane, escapes[lane][part] << (16 - width), 1 << (16 - width))
            for lane in lanes_here:
                t = int(half_width[first + lane])
                q = bins[lane] - t
                if lane in escapes:
                    bits, low, high = escapes[lane]
                    q += np.sign(q) * ((1 << bits) + (high << 16) + low - 1)
                out.append(q)
        decoded.append(np.asarray(out, np.int64))
    return decoded, all(x == 1 << 16 for x in states) and position == len(words)


# --------------------------------------------------------------------------
# The JAX coder on the same segments.
# --------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _jax_encode(lanes, segments):
    state = rans.new_encoder(lanes, sum(rans.max_words(len(q)) for _, q in segments))
    for params, offsets in reversed(segments):
        state = rans.encode_segment(state, offsets, params, integer_cdf.mixture_cdf, integer_cdf.half_widths)
    return rans.flush(state), state.overflow


@functools.partial(jax.jit, static_argnums=0)
def _jax_decode(lanes, words, segments):
    state, out = rans.new_decoder(words, lanes), []
    for params in segments:
        state, offsets = rans.decode_segment(
            state, words, params, integer_cdf.mixture_cdf, integer_cdf.half_widths
        )
        out.append(offsets)
    return out, rans.decoder_finished(state, words)


def _segments(rng, sizes):
    """(params, offsets) per segment: values drawn around the models, some far beyond their tables."""
    out = []
    for size in sizes:
        means = rng.normal(0, 3, (3, size)).astype(np.float32)
        scales = np.exp(rng.uniform(np.log(0.11), np.log(30), (3, size))).astype(np.float32)
        weights = rng.dirichlet(np.ones(3), size).T.astype(np.float32)
        params = np.asarray(
            integer_cdf.quantize_parameters(*map(jnp.asarray, (means, scales, weights)), True)
        )
        offsets = np.round(rng.normal(0, 1, size) * scales[0] + means[0] - params[0] / 1024).astype(np.int32)
        far = rng.random(size) < 0.05
        offsets[far] = rng.choice([-1, 1], far.sum()) * rng.integers(64, 2**23, far.sum())
        out.append((params, offsets))
    return out


@pytest.mark.parametrize("lanes, sizes", [(1, (9, 40)), (5, (37, 0, 64))])
@pytest.mark.parametrize("escapes", ["branched", "masked"])
def test_jax_coder_writes_the_reference_bytes_and_both_round_trip(lanes, sizes, escapes, monkeypatch):
    """`escapes`: a CPU branches around them (`rans._if_any_escape`); other backends run them masked."""
    encode, decode = _jax_encode, _jax_decode
    if escapes == "masked":  # lowered as for a GPU (the `default` branch)
        monkeypatch.setattr(rans.jax.lax, "platform_dependent", lambda op, cpu, default: default(op))
        # New functions, so that JAX traces them again rather than reusing the branched traces.
        encode = jax.jit(lambda *args: _jax_encode.__wrapped__(*args), static_argnums=0)
        decode = jax.jit(lambda *args: _jax_decode.__wrapped__(*args), static_argnums=0)
    segments = _segments(np.random.default_rng(lanes), sizes)
    tables = [(np.asarray(_cdf_tables(jnp.asarray(p))), q, 1 << p[1]) for p, q in segments]
    expected = reference_encode(tables, lanes)
    (buffer, first), overflow = encode(lanes, [tuple(map(jnp.asarray, s)) for s in segments])
    words = np.asarray(buffer)[int(first) :]
    assert int(overflow) == 0
    np.testing.assert_array_equal(words, expected)
    decoded, finished = decode(lanes, jnp.asarray(words), [jnp.asarray(p) for p, _ in segments])
    assert bool(finished)
    reference, reference_finished = reference_decode(list(expected), tables, lanes)
    assert reference_finished
    for (_, offsets), mine, theirs in zip(segments, decoded, reference, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), offsets)
        np.testing.assert_array_equal(theirs, offsets)


def test_the_search_finds_the_bin_of_every_slot_for_every_alphabet_size():
    """All 2^16 slots, one per lane, against a search of the materialized CDF: every T, up to 129 bins."""
    mixtures = [  # (means, scales, weights) of K = 3 components, T = 1 to 64
        ((0.0, 0.0, 0.1), (0.11, 0.12, 0.13), (0.5, 0.3, 0.2)),
        ((0.3, 0.0, 0.2), (0.15, 0.2, 0.1), (0.98, 0.01, 0.01)),
        ((0.3, 0.0, 0.2), (0.3, 0.2, 0.4), (0.98, 0.01, 0.01)),
        ((1.0, -1.0, 0.0), (0.5, 1.0, 0.7), (0.3, 0.3, 0.4)),
        ((1.0, -1.0, 0.0), (1.5, 1.0, 2.0), (0.3, 0.3, 0.4)),
        ((0.0, 3.0, -9.0), (0.11, 0.5, 2.0), (0.5, 0.49, 0.01)),
        ((0.0, 3.0, -40.0), (0.11, 0.5, 2.0), (0.98, 0.01, 0.01)),
        ((-20.0, 30.0, 0.0), (8.0, 0.2, 40.0), (0.4, 0.4, 0.2)),
    ]
    means, scales, weights = (np.asarray([m[i] for m in mixtures], np.float32).T for i in range(3))
    params = integer_cdf.quantize_parameters(*map(jnp.asarray, (means, scales, weights)), False)
    tables = np.asarray(_cdf_tables(params))
    assert set(np.asarray(params[1]).tolist()) == {0, 1, 2, 3, 4, 5, 6}  # T = 1, 2, ..., 64
    slots = jnp.arange(1 << 16, dtype=jnp.int32)

    @jax.jit
    def search(model):
        model = jnp.broadcast_to(model[:, None], (model.shape[0], slots.shape[0]))
        return rans._search(model, integer_cdf.half_widths(model), slots, integer_cdf.mixture_cdf)

    for column, table in enumerate(tables):
        num_bins = 2 * (1 << int(params[1, column])) + 1
        expected = np.searchsorted(table[: num_bins + 1], np.asarray(slots), side="right") - 1
        bins, low, high = map(np.asarray, search(params[:, column]))
        np.testing.assert_array_equal(bins, expected)
        np.testing.assert_array_equal(low, table[expected])
        np.testing.assert_array_equal(high, table[expected + 1])


def test_damaged_streams_never_decode_to_the_original_and_offsets_beyond_the_range_are_counted():
    lanes, segments = 5, _segments(np.random.default_rng(7), (37, 0, 64))
    (buffer, first), _ = _jax_encode(lanes, [tuple(map(jnp.asarray, s)) for s in segments])
    words = np.asarray(buffer)[int(first) :].copy()
    params = [jnp.asarray(p) for p, _ in segments]
    for position in (0, 11, len(words) - 1):
        damaged = words.copy()
        damaged[position] ^= 0x0101
        decoded, finished = _jax_decode(lanes, jnp.asarray(damaged), params)
        # Each stream decodes to one set of symbols: never the original from a damaged stream. (A
        # wrong decode may still end exactly, as at position 11: the codec's checksum catches it.)
        same = all(np.array_equal(np.asarray(d), q) for d, (_, q) in zip(decoded, segments, strict=True))
        assert not (same and bool(finished))
    _, finished = _jax_decode(lanes, jnp.asarray(np.append(words, 7)), params)  # one word too many
    assert not bool(finished)
    _, finished = _jax_decode(lanes, jnp.asarray(words[:-1]), params)  # one word too few
    assert not bool(finished)
    segments[0][1][3] = 2**30
    _, overflow = _jax_encode(lanes, [tuple(map(jnp.asarray, s)) for s in segments])
    assert int(overflow) == 1


def test_lanes_grow_with_the_image():
    assert rans.choose_lanes(100) == 1
    assert rans.choose_lanes(313_344) == 32  # 512x768, M = 192
    assert rans.choose_lanes(6_500_000) == 128  # 3840x2160
    assert rans.choose_lanes(10**12) == rans.MAX_LANES


def test_a_traced_count_codes_only_the_first_symbols_of_a_longer_segment():
    """A size bucket's segments (`codec.Codec`): 37 symbols of 64, the count known only when run;
    the bytes of the 37 alone, whatever is padded past them."""
    lanes, count = 5, 37
    (params, offsets), (junk, _) = _segments(np.random.default_rng(7), (64, 64))
    params = params.copy()
    params[:, count:] = junk[:, count:]
    tables = np.asarray(_cdf_tables(jnp.asarray(params[:, :count])))
    expected = reference_encode([(tables, offsets[:count], 1 << params[1, :count])], lanes)

    @jax.jit
    def code(params, offsets, count):
        state = rans.new_encoder(lanes, rans.max_words(offsets.shape[0]))
        state = rans.encode_segment(
            state, offsets, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, count
        )
        buffer, first = rans.flush(state)
        words = jax.lax.dynamic_slice_in_dim(buffer, first, len(expected))
        decoder = rans.new_decoder(words, lanes)
        decoder, decoded = rans.decode_segment(
            decoder, words, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, count
        )
        return words, decoded, rans.decoder_finished(decoder, words)

    words, decoded, finished = code(jnp.asarray(params), jnp.asarray(offsets), jnp.int32(count))
    np.testing.assert_array_equal(np.asarray(words), expected)
    np.testing.assert_array_equal(np.asarray(decoded)[:count], offsets[:count])
    assert bool(finished)
