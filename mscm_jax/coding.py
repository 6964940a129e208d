"""Entropy coding of integer symbols with constriction's range coder.

The pure coding layer under `codec.Codec`: it knows symbols, entropy-model
parameters and streams, not networks.

- A symbol is an integer offset `q` from an element's centre. Each element's
  table covers `-T..T`, T a power of two derived from its own (quantized)
  parameters (`table_half_widths`); the two end bins also hold the tails'
  mass and act as *escapes*: an element coded in an end bin is followed by its excess `|q| - T >= 0` (an
  Elias-gamma-like code in the same stream), so every value is encodable and
  nothing is ever clipped.
- y tables: a mixture of K Gaussians per element (Lin et al. 2023, Eq. 3;
  Cheng et al. 2020), integrated over unit bins in float64 and handed to
  `Categorical(perfect=False)` in chunks of `CHUNK` elements (a 512x768
  image's full table would take ~150 MB); with K = 1 constriction's own
  `QuantizedGaussian` does it faster.
- Before any table is built the parameters are quantized to a grid (means and
  log-scales to 2^-10, weights to 2^-14): the encoder and the decoder compute
  them with the same compiled function on the same inputs, so on one platform
  they agree bit for bit; across platforms (another CPU instruction set,
  another jaxlib) a last-bit difference in a parameter rarely moves it to
  another grid point. Guaranteed: such a divergence is *detected* (each
  stream stores a CRC32 of its decoded symbols, and a stream must be consumed
  exactly), never a silently wrong image. Not guaranteed: that a file written
  on one platform decodes on another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import Iterator

import constriction
import numpy as np
from scipy.special import ndtr

# The model options the streams depend on; the file header names them (coder id 1).
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
UNIFORM = constriction.stream.model.Uniform()
PARAM_GRID_EXPONENT = 10  # means and log-scales on a 2^-10 grid
WEIGHT_GRID_EXPONENT = 14  # mixture weights on a 2^-14 grid
MAX_HALF_WIDTH = 64  # largest T: tables of at most 129 bins
TABLE_SCALES = 6.0  # tables reach this many scales beyond each component's mean
CHUNK = 16384  # elements per block of explicit tables
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

    means, scales, weights: (E, K) float64; the table of element e is the
    mixture's mass on the bins `q +- 1/2`, q = -T..T, with tails folded in.
    """

    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.means)

    def take(self, index) -> ElementModels:
        return ElementModels(self.means[index], self.scales[index], self.weights[index])


def quantize_parameters(means, scales, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parameters snapped to the coding grid, so tiny float differences rarely matter."""
    grid, weight_grid = 2.0**-PARAM_GRID_EXPONENT, 2.0**-WEIGHT_GRID_EXPONENT
    means = np.round(np.asarray(means, np.float64) / grid) * grid
    scales = np.exp(np.round(np.log(np.asarray(scales, np.float64)) / grid) * grid)
    weights = np.round(np.asarray(weights, np.float64) / weight_grid) * weight_grid
    weights = np.maximum(weights, weight_grid)
    return means, scales, weights / weights.sum(-1, keepdims=True)


def mixture_pmf(half_width: int, models: ElementModels) -> np.ndarray:
    """(E, 2T + 1) probabilities of q = -T..T; the end bins hold the tails."""
    edges = np.arange(-half_width, half_width, dtype=np.float64) + 0.5  # 2T inner edges
    z = (edges[None, :, None] - models.means[:, None, :]) / models.scales[:, None, :]
    cdf = np.einsum("erk,ek->er", ndtr(z), models.weights)
    ends = np.zeros((len(models), 1)), np.ones((len(models), 1))
    return np.maximum(np.diff(np.concatenate([ends[0], cdf, ends[1]], axis=1), axis=1), 0.0)


def symbol_crc(symbols: np.ndarray, crc: int = 0) -> int:
    """CRC32 of int32 little-endian symbols, chained over calls."""
    return zlib.crc32(np.ascontiguousarray(symbols, "<i4").tobytes(), crc)


def table_half_widths(models: ElementModels) -> np.ndarray:
    """(E,) each element's own T: a power of two covering every component's mean +- 6 scales.

    A function of the quantized parameters only, so the decoder derives the
    same widths; a narrow table (most channels of a trained model are nearly
    deterministic) costs the coder little, and the rare value beyond it escapes.
    """
    reach = np.max(np.abs(models.means) + TABLE_SCALES * models.scales, axis=1)
    exponent = np.ceil(np.log2(np.maximum(reach, 1.0)))
    return (2 ** np.minimum(exponent, np.log2(MAX_HALF_WIDTH))).astype(np.int64)


# --------------------------------------------------------------------------
# Tables: one block of elements at a time.
# --------------------------------------------------------------------------


def _code_bins(coder, half_width: int, models: ElementModels, bins: np.ndarray | None) -> np.ndarray:
    """Encodes (bins given) or decodes the bins 0..2T of `models`' elements."""
    t = half_width
    if not len(models):
        return np.zeros(0, np.int32)
    if models.means.shape[1] == 1:  # one Gaussian: constriction's own model.
        model = constriction.stream.model.QuantizedGaussian(-t, t)
        means, scales = models.means[:, 0], models.scales[:, 0]
        if bins is None:
            return np.asarray(coder.decode(model, means, scales), np.int32) + t
        coder.encode((bins - t).astype(np.int32), model, means, scales)
        return bins
    out = []
    for start in range(0, len(models), CHUNK):
        block = slice(start, start + CHUNK)
        pmf = mixture_pmf(t, models.take(block)).astype(np.float32)
        if bins is None:
            out.append(np.asarray(coder.decode(CATEGORICAL, pmf), np.int32))
        else:
            coder.encode(bins[block].astype(np.int32), CATEGORICAL, pmf)
    return np.concatenate(out) if bins is None else bins


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


def encode_offsets(encoder, offsets: np.ndarray, models: ElementModels) -> None:
    """Appends the symbols `offsets` (E,) of `models` to a range encoder, by table width."""
    widths = table_half_widths(models)
    for t in np.unique(widths):
        pick = widths == t
        bins = np.clip(offsets[pick], -t, t) + t
        _code_bins(encoder, int(t), models.take(pick), bins)
        _encode_escapes(encoder, np.abs(offsets[pick][(bins == 0) | (bins == 2 * t)]) - t)


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
    widths = table_half_widths(models)
    offsets = np.zeros(len(models), np.int64)
    for t in np.unique(widths):
        pick = widths == t
        part = _code_bins(decoder, int(t), models.take(pick), None).astype(np.int64) - t
        at_end = np.abs(part) == t
        part[at_end] += np.sign(part[at_end]) * _decode_escapes(decoder, int(at_end.sum()))
        offsets[pick] = part
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
