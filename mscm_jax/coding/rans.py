"""A vectorized rANS coder in JAX: L interleaved lanes, one stream, exact integer arithmetic.

rANS (Duda 2013) with a 32-bit state per lane, 16-bit words and 16-bit
frequencies (the CDFs of `coding` total 2^16). L lanes code symbols
`i = step * L + lane` side by side; at each step the lanes that renormalize
read (or write) one word each, in lane order, from one shared stream
(Giesen's interleaved rANS). Everything is elementwise over the lanes plus one
prefix sum per renormalization, so a segment of symbols is one
`jax.lax.fori_loop` inside whatever compiled call the caller builds, on every
backend, with the same bits everywhere.

The lane states are carried across segments (z, then each stage of y) and
flushed once per image: each lane writes 4 bytes and costs 16 to 32 bits
(its known start state and its final state's unused range), which is
what bounds L (the codec picks it from the number of symbols). rANS is last
in, first out: the encoder visits the segments, steps and sub-steps in exactly
the reverse of the decoder's order and writes the stream from its end.

Each symbol is a bin `0..B-1` of its own CDF (`cdf_fn`), B = 2T + 1 bins for
offsets `-T..T`; the two end bins escape: the excess `e = |q| - T` follows as
`b = bit_length(e + 1) - 1` (5-bit uniform) and the `b` low bits of `e + 1`
(uniform, at most 16 + 7 bits), decoded by the same lane right after its
symbol. So every offset up to `MAX_EXCESS` is codable and nothing is clipped.

Stream layout: the L final encoder states as two words each (high, low), in
lane order, then the words in decoding order. A decoder that ends with every
lane back at `STATE_LOW` and every word read has decoded exactly what was
encoded (or, with probability about 2^-16 per lane, garbage that the codec's
symbol checksum catches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

WORD_BITS = 16
STATE_LOW = 1 << WORD_BITS  # lane states live in [2^16, 2^32)
PRECISION = 16  # frequencies total 2^16
LENGTH_BITS = 5  # the escape's bit length b, uniform over 0..31
MAX_EXCESS_BITS = 23
MAX_EXCESS = (1 << (MAX_EXCESS_BITS + 1)) - 2  # e + 1 < 2^24
MAX_BINS = 129  # alphabets of at most 129 bins (T <= 64)
MAX_LANES = 4096

# cdf_fn(models (R, L), edges (L,) or (w, L) int32) -> CDFs of edges' shape in [0, 2^16] (the decoder's
# search asks for w edges per lane at once); half_width_fn(models) -> (L,) T.
CdfFn = Callable[[jax.Array, jax.Array], jax.Array]
HalfWidthFn = Callable[[jax.Array], jax.Array]


class EncoderState(NamedTuple):
    """Lane states (L,) uint32, the word buffer (W,) uint16 filled from its end, its first word."""

    x: jax.Array
    buffer: jax.Array
    tail: jax.Array
    overflow: jax.Array  # int32 count of offsets beyond MAX_EXCESS (not codable)


class DecoderState(NamedTuple):
    """Lane states (L,) uint32 and the next word of the stream to read."""

    x: jax.Array
    position: jax.Array


# Compiled programs that take or return coder states can be kept on disk (`jax.export`).
for _state in (EncoderState, DecoderState):
    jax.export.register_namedtuple_serialization(
        _state, serialized_name=f"mscm_jax.coding.rans.{_state.__name__}"
    )


def new_encoder(lanes: int, capacity: int) -> EncoderState:
    """An encoder of `lanes` lanes whose segments may write `capacity` words (plus the flush).

    A stream that outgrows it (`max_words` bounds every stream) is not valid:
    `flush` then returns a negative first word, and the caller codes again
    into a larger buffer.

    NumPy arrays: `jax.device_put` them, or pass them to a compiled function (built with jnp,
    each would be a program of its own to compile in every new process).
    """
    size = capacity + 2 * lanes
    return EncoderState(
        np.full(lanes, STATE_LOW, np.uint32), np.zeros(size, np.uint16), np.int32(size), np.int32(0)
    )


def max_words(count: int) -> int:
    """Words `count` symbols may write at most: one per symbol, three more per escape."""
    return 4 * count


def flush(state: EncoderState) -> tuple[jax.Array, jax.Array]:
    """(buffer, first word): the stream is `buffer[first:]`, the final states at its head.

    A negative first word: the segments wrote more than the buffer holds (see `new_encoder`).
    """
    lanes = state.x.shape[0]
    head = jnp.stack([state.x >> WORD_BITS, state.x & 0xFFFF], axis=1).reshape(-1).astype(jnp.uint16)
    first = state.tail - 2 * lanes
    return jax.lax.dynamic_update_slice(state.buffer, head, (first,)), first


def new_decoder(words: jax.Array, lanes: int) -> DecoderState:
    """A decoder of the stream `words` (W,) uint16 (W >= 2 * lanes; the caller checks)."""
    head = words[: 2 * lanes].reshape(lanes, 2).astype(jnp.uint32)
    return DecoderState((head[:, 0] << WORD_BITS) | head[:, 1], jnp.int32(2 * lanes))


def decoder_finished(state: DecoderState, words: jax.Array) -> jax.Array:
    """True when every lane is back at its initial state and every word was read."""
    return jnp.all(state.x == STATE_LOW) & (state.position == words.shape[0])


# --------------------------------------------------------------------------
# One symbol per lane, with renormalization.
# --------------------------------------------------------------------------


def _encode(state: EncoderState, start: jax.Array, freq: jax.Array, active: jax.Array) -> EncoderState:
    """Pushes symbols [start, start + freq) of 2^16 on the active lanes (0 < freq < 2^16)."""
    freq = jnp.where(active, freq, 1).astype(jnp.uint32)
    x = state.x
    need = active & (x >= (freq << WORD_BITS))
    tail = state.tail - jnp.sum(need, dtype=jnp.int32)
    where = tail + jnp.cumsum(need, dtype=jnp.int32) - need  # lane order, as the decoder reads
    where = jnp.where(need, where, state.buffer.shape[0])  # out of bounds: dropped
    buffer = state.buffer.at[where].set((x & 0xFFFF).astype(jnp.uint16), mode="drop")
    x = jnp.where(need, x >> WORD_BITS, x)
    coded = ((x // freq) << PRECISION) + (x % freq) + start.astype(jnp.uint32)
    return state._replace(x=jnp.where(active, coded, x), buffer=buffer, tail=tail)


def _advance(state: DecoderState, words: jax.Array, slot: jax.Array, start: jax.Array, freq: jax.Array,
             active: jax.Array) -> DecoderState:  # fmt: skip
    """Pops the decoded symbol [start, start + freq) on the active lanes and reads words where needed."""
    x = freq.astype(jnp.uint32) * (state.x >> PRECISION) + slot - start.astype(jnp.uint32)
    x = jnp.where(active, x, state.x)
    need = active & (x < STATE_LOW)
    where = state.position + jnp.cumsum(need, dtype=jnp.int32) - need
    # A clamped read, masked: the same words as a gather filling 0 past the end, and also
    # what a Pallas kernel's ref can do (`rans_kernel`).
    size = words.shape[0]
    word = jnp.where(where < size, words[jnp.minimum(where, size - 1)], 0).astype(jnp.uint32)
    x = jnp.where(need, (x << WORD_BITS) | word, x)
    return state._replace(x=x, position=state.position + jnp.sum(need, dtype=jnp.int32))


def _encode_uniform(state: EncoderState, value: jax.Array, width: jax.Array, active: jax.Array):
    """`value` as one of 2^width equally likely symbols (width 1..16; 0 codes nothing)."""
    shift = (PRECISION - width).astype(jnp.uint32)
    return _encode(state, value.astype(jnp.uint32) << shift, jnp.uint32(1) << shift, active & (width > 0))


def _decode_uniform(state: DecoderState, words: jax.Array, width: jax.Array, active: jax.Array):
    active = active & (width > 0)
    shift = (PRECISION - width).astype(jnp.uint32)
    slot = state.x & 0xFFFF
    value = slot >> shift
    state = _advance(state, words, slot, value << shift, jnp.uint32(1) << shift, active)
    return state, jnp.where(active, value, 0).astype(jnp.int32)


def _escape_parts(bits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Widths of the low (<= 16) and high parts of an escape's `bits` payload bits."""
    low = jnp.minimum(bits, 16)
    return low, bits - low


def _if_any_escape(escape: jax.Array, code: Callable, skip: Callable, operand):
    """`code(operand)`, or on a CPU `skip(operand)` when no lane escapes (both give the same bits).

    Escapes are rare, and their three uniform parts are a third of a step's
    operations: a CPU, which runs the operations one after another, branches
    around them (about 20 % of the decoder's time). A GPU would have to bring
    the branch's predicate to the host at every step, so it runs them always,
    masked.
    """

    def branch(operand):
        return jax.lax.cond(jnp.any(escape), code, skip, operand)

    return jax.lax.platform_dependent(operand, cpu=branch, default=code)


# --------------------------------------------------------------------------
# Segments: `count` symbols, L per step.
# --------------------------------------------------------------------------


def _padded(models: jax.Array, steps: int, lanes: int) -> jax.Array:
    return jnp.pad(models, ((0, 0), (0, steps * lanes - models.shape[1])))


def _used_steps(count: jax.Array | int, steps: int, lanes: int, unroll: int) -> jax.Array | int:
    """The loop steps that hold the first `count` symbols: a traced `count` bounds the loop, so that
    symbols padded past it (a size bucket's, `codec.Codec`) cost nothing. XLA unrolls only loops
    of a static length: with `unroll` > 1 every step runs, those past `count` idle."""
    if unroll > 1:
        return steps
    if isinstance(count, (int, np.integer)):
        return min(steps, -(-int(count) // lanes))
    return jnp.minimum(steps, (count + lanes - 1) // lanes)


def encode_segment(state: EncoderState, offsets: jax.Array, models: jax.Array, cdf_fn: CdfFn,
                   half_width_fn: HalfWidthFn, count: jax.Array | int | None = None,
                   unroll: int = 1) -> EncoderState:  # fmt: skip
    """Pushes the offsets (E,) int32 of symbols whose models are the columns of `models` (R, E).

    `count` (may be traced): only the first `count` symbols are coded (default: all E).
    """
    size, lanes = offsets.shape[0], state.x.shape[0]
    count = size if count is None else count
    steps = -(-size // lanes)
    if not steps:
        return state
    models = _padded(models, steps, lanes)
    offsets = jnp.pad(offsets, (0, steps * lanes - size))

    used = _used_steps(count, steps, lanes, unroll)

    def step(i, state):
        start = (used - 1 - i) * lanes  # the decoder's last step first
        model = jax.lax.dynamic_slice_in_dim(models, start, lanes, axis=1)
        q = jax.lax.dynamic_slice_in_dim(offsets, start, lanes)
        active = start + jnp.arange(lanes) < count
        t = half_width_fn(model)
        bins = jnp.clip(q, -t, t) + t
        escape = active & ((bins == 0) | (bins == 2 * t))
        excess = jnp.where(escape, jnp.abs(q) - t, 0)
        overflow = jnp.sum(escape & (excess > MAX_EXCESS), dtype=jnp.int32)
        value = jnp.clip(excess, 0, MAX_EXCESS) + 1
        bits = 31 - jax.lax.clz(value)
        rest = value - (1 << bits)
        low_width, high_width = _escape_parts(bits)

        def encode_escapes(state):  # the escape's parts, then the symbol: the reverse of the decoder's order
            state = _encode_uniform(state, rest >> 16, high_width, escape)
            state = _encode_uniform(state, rest & 0xFFFF, low_width, escape)
            return _encode_uniform(state, bits, jnp.full_like(bits, LENGTH_BITS), escape)

        state = _if_any_escape(escape, encode_escapes, lambda state: state, state)
        low = cdf_fn(model, bins)
        state = _encode(state, low, cdf_fn(model, bins + 1) - low, active)
        return state._replace(overflow=state.overflow + overflow)

    return jax.lax.fori_loop(0, used, step, state, unroll=unroll)


# CDF values per lane in each round of the decoder's search: round i leaves segments of at most
# ceil(n / (w_i + 1)) of n bins, so five rounds of two reach one bin of MAX_BINS (3^5 >= 129).
# Powers of two, as Triton requires of the decode kernel's arrays (`rans_kernel`); rounds of
# one value are far slower under XLA, which then fuses the rounds and recomputes the CDFs.
SEARCH_WIDTHS = (2, 2, 2, 2, 2)


def _search(model: jax.Array, half_width: jax.Array, slot: jax.Array, cdf_fn: CdfFn,
            widths: tuple[int, ...] = SEARCH_WIDTHS):  # fmt: skip
    """(bin, CDF at bin, CDF at bin + 1) with CDF(bin) <= slot < CDF(bin + 1), per lane.

    Rounds of a (w + 1)-ary search over the bin edges: each computes w CDF
    values per lane side by side, spread evenly over the lane's remaining
    segment [lo, hi), and keeps the part the slot falls in, with the CDF at its
    two ends. Ten values per symbol (five rounds of two) instead of a two-round
    search's 26: the CDF, a mixture of K Gaussians, is most of a step's work,
    and on a 2-core CPU (XLA) a step of 32 lanes took 10.1 us instead of 15.0 us
    (docs/status.md). Edges past the segment are computed at its end, whose
    CDF is known to exceed the slot, so no edge leaves the alphabet. With too few
    rounds for `MAX_BINS` bins the segment would end wider than one bin.
    """
    lo, hi = jnp.zeros_like(half_width), 2 * half_width + 1
    low, high = jnp.zeros_like(slot), jnp.full_like(slot, 1 << PRECISION)
    for width in widths:
        stride = (hi - lo + width) // (width + 1)  # ceil((hi - lo) / (width + 1))
        pick = jnp.arange(width)[:, None]
        values = cdf_fn(model, jnp.minimum(lo + stride * (pick + 1), hi))  # (width, L)
        below = jnp.sum(values <= slot, axis=0)  # CDFs increase: the first `below` edges
        low = jnp.where(below > 0, jnp.sum(jnp.where(pick == below - 1, values, 0), axis=0), low)
        high = jnp.where(below < width, jnp.sum(jnp.where(pick == below, values, 0), axis=0), high)
        lo, hi = lo + stride * below, jnp.minimum(lo + stride * (below + 1), hi)
    return lo, low, high


def _decode_step(state: DecoderState, words: jax.Array, model: jax.Array, active: jax.Array, cdf_fn: CdfFn,
                 half_width_fn: HalfWidthFn,
                 if_any_escape: Callable = _if_any_escape) -> tuple[DecoderState, jax.Array]:  # fmt: skip
    """One decoder step: every active lane pops one symbol; (state, offsets (L,), 0 where inactive).

    `decode_segment`'s loop body, and `rans_kernel`'s, which passes its own
    branch around escapes.
    """
    t = half_width_fn(model)
    slot = state.x & 0xFFFF
    bins, low, high = _search(model, t, slot.astype(jnp.int32), cdf_fn)
    state = _advance(state, words, slot, low, high - low, active)
    escape = active & ((bins == 0) | (bins == 2 * t))

    def decode_escapes(state):
        state, bits = _decode_uniform(state, words, jnp.full_like(t, LENGTH_BITS), escape)
        low_width, high_width = _escape_parts(bits)
        state, rest_low = _decode_uniform(state, words, low_width, escape)
        state, rest_high = _decode_uniform(state, words, high_width, escape)
        return state, (1 << bits) + (rest_high << 16) + rest_low - 1

    state, excess = if_any_escape(escape, decode_escapes, lambda state: (state, jnp.zeros_like(t)), state)
    q = bins - t
    q = jnp.where(escape, q + jnp.sign(q) * excess, q)
    return state, jnp.where(active, q, 0)


def decode_segment(state: DecoderState, words: jax.Array, models: jax.Array, cdf_fn: CdfFn,
                   half_width_fn: HalfWidthFn, count: jax.Array | int | None = None,
                   unroll: int = 1) -> tuple[DecoderState, jax.Array]:  # fmt: skip
    """Pops the symbols of the stream `words` whose models are the columns of `models` (R, E).

    Returns the state and the offsets (E,) int32; with `count` (may be traced)
    only the first `count` are decoded, the rest are 0.

    The bin is found from CDF values computed on the fly (`_search`: 10 per
    symbol whatever its T), not from a materialized table of all 2T + 2.
    """
    size, lanes = models.shape[1], state.x.shape[0]
    count = size if count is None else count
    steps = -(-size // lanes)
    if not steps:
        return state, jnp.zeros((0,), jnp.int32)
    models = _padded(models, steps, lanes)

    def step(i, carry):
        state, out = carry
        start = i * lanes
        model = jax.lax.dynamic_slice_in_dim(models, start, lanes, axis=1)
        active = start + jnp.arange(lanes) < count
        state, q = _decode_step(state, words, model, active, cdf_fn, half_width_fn)
        return state, jax.lax.dynamic_update_slice_in_dim(out, q, start, axis=0)

    out = jnp.zeros((steps * lanes,), jnp.int32)
    used = _used_steps(count, steps, lanes, unroll)
    state, out = jax.lax.fori_loop(0, used, step, (state, out), unroll=unroll)
    return state, out[:size]


def choose_lanes(num_symbols: int) -> int:
    """Lanes for an image of `num_symbols` symbols: about sqrt(n) / 16, a power of two.

    Each lane writes 4 bytes (costing about 3); a 512x768 image (~310k symbols, ~25 KB)
    gets 32 lanes (128 bytes), a 3840x2160 one (~6.5M symbols) 128.
    """
    lanes = 2 ** round(np.log2(max(np.sqrt(num_symbols) / 16, 1.0)))
    return int(min(lanes, MAX_LANES))


def words_to_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, "<u2").tobytes()


def bytes_to_words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<u2").astype(np.uint16)
