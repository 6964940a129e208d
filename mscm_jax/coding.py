"""Entropy coding of integer symbols with constriction's range coder.

The pure coding layer under `codec.Codec`: it knows symbols, entropy-model
parameters and streams, not networks.

- A symbol is an integer offset `q` from an element's centre. Each element's
  table covers `-T..T`, T a power of two derived from its own (quantized)
  parameters (`coding_parameters`); the two end bins also hold the tails'
  mass and act as *escapes*: an element coded in an end bin is followed by its excess `|q| - T >= 0` (an
  Elias-gamma-like code in the same stream), so every value is encodable and
  nothing is ever clipped.
- y tables: a mixture of K Gaussians per element (Lin et al. 2023, Eq. 3;
  Cheng et al. 2020), integrated over unit bins by compiled functions (one
  float32 normal tail per bin edge, `mixture_pmf`) and handed to
  `Categorical(perfect=False)` in blocks of `CHUNK` elements (a 512x768
  image's full table would take ~150 MB); with K = 1 constriction's own
  `QuantizedGaussian` does it faster.
- Before any table is built the parameters are quantized to a grid (means and
  log-scales to 2^-10, weights to 2^-14) by `coding_parameters`, inside the
  compiled stage function: the encoder and the decoder compute them with the
  same compiled functions on the same inputs, so on one platform they agree
  bit for bit; across platforms (another CPU instruction set,
  another jaxlib) a last-bit difference in a parameter rarely moves it to
  another grid point. Guaranteed: such a divergence is *detected* (each
  stream stores a CRC32 of its decoded symbols, and a stream must be consumed
  exactly), never a silently wrong image. Not guaranteed: that a file written
  on one platform decodes on another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import operator
import zlib
from collections.abc import Iterator

import constriction
import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.ops import standard_normal_cdf

# The model options the streams depend on; the file header names them (coder id 3).
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
UNIFORM = constriction.stream.model.Uniform()
PARAM_GRID_EXPONENT = 10  # means and log-scales on a 2^-10 grid
WEIGHT_GRID_EXPONENT = 14  # mixture weights on a 2^-14 grid
MAX_HALF_WIDTH = 64  # largest T: tables of at most 129 bins
TABLE_SCALES = 6.0  # tables reach this many scales beyond each component's mean
CHUNK = 1 << 15  # elements per block of explicit tables (17 MB at T = 64)
# Escapes: the excess e is coded as b = bit_length(e + 1) - 1 under p(b) ~ 2^-(b+1),
# then the b low bits of e + 1 as two uniform symbols of at most 12 bits.
MAX_ESCAPE_BITS = 24
_LENGTH_PROBABILITIES = (0.5 ** np.arange(1, MAX_ESCAPE_BITS + 1)).astype(np.float32)
LENGTH_MODEL = constriction.stream.model.Categorical(_LENGTH_PROBABILITIES, perfect=False)


class CodingError(ValueError):
    """A stream that does not decode to what was encoded, or a value that cannot be coded."""


@dataclasses.dataclass(frozen=True)
class ElementModels:
    """Quantized entropy parameters of E elements, relative to their centres.

    params: (3K, E) float32, rows the K means, K scales and K weights
    (`coding_parameters`' rows after the centre and T); half_widths: (E,)
    each element's T. The table of element e is the mixture's mass on the
    bins `q +- 1/2`, q = -T..T, with tails folded in. Elements run along the
    minor axis, the one that compiled table building vectorizes.
    """

    params: np.ndarray
    half_widths: np.ndarray

    @classmethod
    def from_arrays(cls, means, scales, weights) -> ElementModels:
        """Models of (E, K) parameters given relative to centre 0, quantized (for tests and tools)."""
        means, scales, weights = quantize_parameters(*(np.asarray(a).T for a in (means, scales, weights)))
        params = np.concatenate([np.asarray(a) for a in (means, scales, weights)])
        return cls(params, np.asarray(table_half_widths(means, scales)).astype(np.int64))

    @property
    def num_components(self) -> int:
        return self.params.shape[0] // 3

    @property
    def means(self) -> np.ndarray:
        """(E, K)"""
        return self.params[: self.num_components].T

    @property
    def scales(self) -> np.ndarray:
        """(E, K)"""
        return self.params[self.num_components : 2 * self.num_components].T

    @property
    def weights(self) -> np.ndarray:
        """(E, K)"""
        return self.params[2 * self.num_components :].T

    def __len__(self) -> int:
        return self.params.shape[1]

    def take(self, index) -> ElementModels:
        return ElementModels(self.params[:, index], self.half_widths[index])


def quantize_parameters(means, scales, weights) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(K, ...) parameters snapped to the coding grid, so tiny float differences rarely matter."""
    grid, weight_grid = 2.0**PARAM_GRID_EXPONENT, 2.0**WEIGHT_GRID_EXPONENT
    means = jnp.round(jnp.asarray(means, jnp.float32) * grid) / grid
    scales = jnp.exp(jnp.round(jnp.log(jnp.asarray(scales, jnp.float32)) * grid) / grid)
    weights = jnp.maximum(jnp.round(jnp.asarray(weights, jnp.float32) * weight_grid), 1.0)
    return means, scales, weights / _sum_components(weights)


def _sum_components(x: jax.Array) -> jax.Array:
    """Sum over the (few) leading rows as elementwise adds: XLA:CPU reduces a short
    major axis an order of magnitude slower than it adds."""
    return functools.reduce(operator.add, x)


def table_half_widths(means: jax.Array, scales: jax.Array) -> jax.Array:
    """(...) each element's T: the power of two (1..64) covering every component's mean +- 6 scales.

    (K, ...) means relative to the element's centre, and scales. Found by
    comparisons, not a logarithm; a narrow table (most channels of a trained
    model are nearly deterministic) costs the coder little, and the rare
    value beyond it escapes.
    """
    reach = functools.reduce(jnp.maximum, jnp.abs(means) + TABLE_SCALES * scales)  # over the K rows
    powers_below = sum((reach > 2.0**j).astype(jnp.float32) for j in range(int(np.log2(MAX_HALF_WIDTH))))
    return 2.0**powers_below


def coding_parameters(
    means: jax.Array, scales: jax.Array, weights: jax.Array, round_centre: bool
) -> jax.Array:
    """Each element's coding parameters, packed for one transfer: (2 + 3K, ...) float32.

    From (K, ...) means, scales and weights. Rows: the centre (the mixture
    mean of the quantized parameters, rounded to an integer when
    `round_centre`), the table half-width T, then the K means relative to the
    centre, the K scales and the K weights. Component-major, so that every
    row is contiguous. Traceable: the codec runs it inside the compiled stage
    function, so the encoder and the decoder get the very same bits.
    """
    means, scales, weights = quantize_parameters(means, scales, weights)
    centre = _sum_components(means * weights)
    if round_centre:
        centre = jnp.round(centre)
    means = means - centre
    half_width = table_half_widths(means, scales)
    return jnp.concatenate([centre[None], half_width[None], means, scales, weights])


# A table piece (two compiled calls) costs about as much as this many padded bins (measured, 2-core CPU).
PIECE_CALL_BINS = 16000


def _piece_sizes() -> np.ndarray:
    """The padded sizes a table piece may have: 2^j and 3 * 2^(j-1), 256 .. CHUNK."""
    powers = 1 << np.arange(8, int(np.log2(CHUNK)) + 1)
    return np.unique(np.concatenate([powers, 3 * powers[1:] // 4]))


PIECE_SIZES = _piece_sizes()


def _table_pieces(count: int, half_width: int) -> list[tuple[int, int, int]]:
    """(start, stop, padded size) of the pieces `mixture_pmf` splits `count` elements into.

    Sizes come from `PIECE_SIZES` (few shapes, few compiles). The rest pads up
    to the next size when the padding costs less than another call would
    (`PIECE_CALL_BINS`) or is at most an eighth of it; otherwise the largest
    size that fits is split off. A 512x768 image's 4x4 stage of 18432
    elements at T = 1 is 16384 + 2048, not 24576; its groups of ~3456
    elements at T = 4 are one call of 4096.
    """
    sizes, budget = PIECE_SIZES, PIECE_CALL_BINS // (2 * half_width + 1)
    pieces, start = [], 0
    while start < count:
        rest = count - start
        up = int(sizes[min(np.searchsorted(sizes, rest), len(sizes) - 1)])
        if up - rest > max(budget, rest // 8):
            up = int(sizes[max(np.searchsorted(sizes, rest, side="right") - 1, 0)])
        pieces.append((start, min(count, start + up), up))
        start += up
    return pieces


@functools.partial(jax.jit, static_argnums=0)
def _mixture_pmf_bins_major(half_width: int, params: jax.Array) -> jax.Array:
    """(2T + 1, E) masses: one normal tail per bin edge and component, then differences of tails."""
    k = params.shape[0] // 3  # (3K, E): elements along the minor axis, which XLA vectorizes
    # The 2T + 2 edges of bins q = -T..T (bin q is [q - 1/2, q + 1/2)); the end bins are open.
    edges = np.concatenate([[-np.inf], np.arange(-half_width, half_width) + 0.5, [np.inf]])
    edges = edges.astype(np.float32)[:, None]
    # The smaller tail at each edge, Phi(-|x|): accurate far into both tails, which a CDF
    # near 1 is not. Materialized (the barrier), so that each is computed once, not once per
    # bin it bounds: that halves the erfc work, which dominates.
    tails = jax.lax.optimization_barrier(
        jnp.stack([standard_normal_cdf(-jnp.abs((edges - params[c]) / params[k + c])) for c in range(k)])
    )
    pmf = jnp.zeros((len(edges) - 1, params.shape[1]), jnp.float32)
    for c in range(k):
        above = edges >= params[c]  # edge at or above the component's mean
        low, high, low_above, high_above = tails[c, :-1], tails[c, 1:], above[:-1], above[1:]
        mass = jnp.where(low_above, low - high, jnp.where(high_above, 1.0 - low - high, high - low))
        pmf = pmf + params[2 * k + c] * mass
    return jnp.maximum(pmf, 0.0)


# A separate call: fused into the function above, XLA writes the transposed layout
# element by element, several times slower than this tiled transpose.
_transpose = jax.jit(jnp.transpose)


def mixture_pmf(half_width: int, models: ElementModels) -> np.ndarray:
    """(E, 2T + 1) float32 probabilities of q = -T..T; the end bins hold the tails.

    Computed by two compiled functions (float32 erfc, then a transpose) in pieces of a
    few padded sizes (`_table_pieces`); an element's values do not depend on
    the others of its piece. C-contiguous, as constriction needs: it reads a
    strided view's memory as if it were contiguous.
    """
    out = []
    for start, stop, size in _table_pieces(len(models), half_width):
        piece = models.params[:, start:stop]
        if stop - start < size:  # padded with harmless unit parameters (np.pad is ~10x slower here)
            piece = np.concatenate([piece, np.ones((len(piece), size - (stop - start)), np.float32)], axis=1)
        out.append(np.asarray(_transpose(_mixture_pmf_bins_major(half_width, piece)))[: stop - start])
    if len(out) == 1:
        return out[0]
    return np.concatenate(out) if out else np.zeros((0, 2 * half_width + 1), np.float32)


def symbol_crc(symbols: np.ndarray, crc: int = 0) -> int:
    """CRC32 of int32 little-endian symbols, chained over calls."""
    return zlib.crc32(np.ascontiguousarray(symbols, "<i4").tobytes(), crc)


# --------------------------------------------------------------------------
# Tables: one block of elements at a time.
# --------------------------------------------------------------------------


def _code_bins(coder, half_width: int, models: ElementModels, bins: np.ndarray | None) -> np.ndarray:
    """Encodes (bins given) or decodes the bins 0..2T of `models`' elements."""
    t = half_width
    if not len(models):
        return np.zeros(0, np.int32)
    if models.num_components == 1:  # one Gaussian: constriction's own model.
        model = constriction.stream.model.QuantizedGaussian(-t, t)
        means, scales = models.params[0].astype(np.float64), models.params[1].astype(np.float64)
        if bins is None:
            return np.asarray(coder.decode(model, means, scales), np.int32) + t
        coder.encode((bins - t).astype(np.int32), model, means, scales)
        return bins
    out = []
    for start in range(0, len(models), CHUNK):  # a block's tables at a time, not the whole stage's
        block = slice(start, start + CHUNK)
        pmf = mixture_pmf(t, models.take(block))
        if bins is None:
            out.append(np.asarray(coder.decode(CATEGORICAL, pmf), np.int32))
        else:
            coder.encode(bins[block].astype(np.int32), CATEGORICAL, pmf)
    if bins is not None:
        return bins
    return out[0] if len(out) == 1 else np.concatenate(out)


def _encode_escapes(encoder, excess: np.ndarray) -> None:
    if not excess.size:
        return
    if int(excess.max()) >= 2**MAX_ESCAPE_BITS - 1:
        raise CodingError(f"a latent value {int(excess.max())} beyond the codable range; the model diverged")
    value = excess.astype(np.int64) + 1
    bits = np.floor(np.log2(value)).astype(np.int32)
    rest = value - (np.int64(1) << bits)
    encoder.encode(bits, LENGTH_MODEL)
    for part, width in _escape_parts(bits):  # Uniform needs at least 2 values: skip empty parts
        encoder.encode(((rest >> (12 * part)) & 0xFFF)[width > 0].astype(np.int32), UNIFORM,
                       (1 << width[width > 0]).astype(np.int32))  # fmt: skip


def _escape_parts(bits: np.ndarray):
    """(part, bit width per escape) of the low 12 bits and of the bits above them."""
    low = np.minimum(bits, 12)
    return [(0, low), (1, bits - low)]


def _decode_escapes(decoder, count: int) -> np.ndarray:
    if not count:
        return np.zeros(0, np.int64)
    bits = np.asarray(decoder.decode(LENGTH_MODEL, count), np.int32)
    value = np.int64(1) << bits
    for part, width in _escape_parts(bits):
        sizes = (1 << width[width > 0]).astype(np.int32)
        if sizes.size:
            value[width > 0] += np.asarray(decoder.decode(UNIFORM, sizes), np.int64) << (12 * part)
    return value - 1


def width_groups(models: ElementModels) -> list[tuple[int, np.ndarray | slice]]:
    """(T, element indices) per table width, T ascending, elements in order within each.

    When one width covers every element the indices are `slice(None)`: views, not copies.
    """
    widths = models.half_widths
    if len(widths) and (widths == widths[0]).all():
        return [(int(widths[0]), slice(None))]
    order = np.argsort(widths, kind="stable")
    widths = widths[order]
    starts = np.flatnonzero(np.diff(widths)) + 1
    return [
        (int(widths[part[0]]), order[part]) for part in np.split(np.arange(len(order)), starts) if len(part)
    ]


def encode_offsets(encoder, offsets: np.ndarray, models: ElementModels) -> None:
    """Appends the symbols `offsets` (E,) of `models` to a range encoder, by table width."""
    for t, index in width_groups(models):
        bins = np.clip(offsets[index], -t, t) + t
        _code_bins(encoder, t, models.take(index), bins)
        _encode_escapes(encoder, np.abs(offsets[index][(bins == 0) | (bins == 2 * t)]) - t)


@contextlib.contextmanager
def invalid_data_as_coding_error(what: str) -> Iterator[None]:
    """constriction's own complaints about undecodable data, as one clear CodingError."""
    try:
        yield
    except CodingError:
        raise
    except (AssertionError, ValueError, RuntimeError, OverflowError) as e:
        raise CodingError(f"{what}: invalid compressed data ({e})") from None


def decode_offsets(decoder, models: ElementModels) -> np.ndarray:
    """The next len(models) symbols of a range decoder (int64)."""
    offsets = np.zeros(len(models), np.int64)
    for t, index in width_groups(models):
        part = _code_bins(decoder, t, models.take(index), None).astype(np.int64) - t
        at_end = np.abs(part) == t
        part[at_end] += np.sign(part[at_end]) * _decode_escapes(decoder, int(at_end.sum()))
        offsets[index] = part
    return offsets


# --------------------------------------------------------------------------
# z: fixed per-channel tables of the factorized density.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChannelTables:
    """Static tables of z: row c is channel c's pmf of q = -T..T (float32, tails in the end bins)."""

    half_width: int
    pmf: np.ndarray  # (N, 2T + 1)

    def encode(self, encoder, offsets: np.ndarray) -> None:
        """offsets: (positions, N) symbols, coded in row-major order."""
        t = self.half_width
        rows = np.broadcast_to(self.pmf[None], (len(offsets), *self.pmf.shape)).reshape(-1, 2 * t + 1)
        flat = offsets.reshape(-1)
        bins = np.clip(flat, -t, t) + t
        encoder.encode(bins.astype(np.int32), CATEGORICAL, rows)
        _encode_escapes(encoder, np.abs(flat[(bins == 0) | (bins == 2 * t)]) - t)

    def decode(self, decoder, positions: int) -> np.ndarray:
        t = self.half_width
        rows = np.broadcast_to(self.pmf[None], (positions, *self.pmf.shape)).reshape(-1, 2 * t + 1)
        offsets = np.asarray(decoder.decode(CATEGORICAL, rows), np.int64) - t if len(rows) else np.zeros(0)
        offsets = offsets.astype(np.int64)
        at_end = np.abs(offsets) == t
        offsets[at_end] += np.sign(offsets[at_end]) * _decode_escapes(decoder, int(at_end.sum()))
        return offsets.reshape(positions, -1)


# --------------------------------------------------------------------------
# Streams.
# --------------------------------------------------------------------------


def new_encoder():
    return constriction.stream.queue.RangeEncoder()


def finish(encoder) -> bytes:
    return encoder.get_compressed().tobytes()


def new_decoder(data: bytes, what: str):
    if len(data) % 4:
        raise CodingError(f"{what}: stream length {len(data)} is not a multiple of 4 bytes")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(data, np.uint32).copy())


def check_consumed(decoder, what: str) -> None:
    """Range decoders decode random words without complaint: the stream must end here."""
    if not decoder.maybe_exhausted():
        raise CodingError(f"{what}: stream not consumed exactly (corrupt data, or another model)")
