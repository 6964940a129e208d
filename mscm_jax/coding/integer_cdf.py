"""The integer coding model: entropy parameters -> 16-bit integer CDFs, exactly.

The pure layer between the networks and the coder (`rans`). It knows symbols
and distributions, not networks and not streams.

- A symbol is an integer offset `q` from an element's centre. Each element's
  alphabet covers the bins `-T..T` (T a power of two, 1..64, from its own
  parameters); the two end bins also hold the tails and act as *escapes*: a
  value coded there is followed by its excess `|q| - T` (`rans` codes it), so
  every value is codable and nothing is ever clipped.
- y: a mixture of K Gaussians per element (Lin et al. 2023, Eq. 3; Cheng et
  al. 2020, Eq. 5). `quantize_parameters` puts the float parameters on a
  fixed-point grid (means in 2^-10, log-scales in 2^-10, weights in 2^-14
  summing to exactly 2^14) inside the compiled stage function; from there on
  `mixture_cdf` is integer arithmetic only: a fixed-point table of the
  standard normal CDF with linear interpolation, and fixed-point tables of
  1/scale and of 8 scales over the log-scale grid. Given the same integer
  parameters every backend (CPU, GPU, TPU, any jaxlib) computes the same CDF
  values; every bin gets a frequency of at least 1 and they total 2^16.
- z: fixed per-channel integer CDF tables of the factorized density
  (`quantize_pmf`), computed once per model and stored in model files.

The fixed-point constants are part of the file format (docs/format.md); the
tables are computed from them at import and checked against a digest, so a
platform whose libm rounds one entry differently fails loudly instead of
writing files no one else can read.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PRECISION = 16  # CDFs total 2^16: the rANS coder's 16-bit frequency resolution
TOTAL = 1 << PRECISION
PARAM_BITS = 10  # means and log-scales on a 2^-10 grid
WEIGHT_BITS = 14  # mixture weights in 2^-14, summing to exactly 2^14
MAX_HALF_WIDTH = 64  # largest T: alphabets of at most 129 bins
MAX_LOG2_HALF_WIDTH = 6
TABLE_SCALES = 6  # an alphabet reaches this many scales beyond each component's mean
MAX_RELATIVE_MEAN = 1 << 16  # component means at most 64 from the centre (2^-10 units)
# Log-scales (2^-10 units) are clamped to [log 0.105, log 256.4]; the model bounds scales below at 0.11.
LOG_SCALE_MIN, LOG_SCALE_MAX = -2304, 5680
# Standard normal CDF: table on [-8, 8] in steps of 2^-6, values in 2^-16; arguments in 2^-12.
PHI_RANGE, PHI_STEP_BITS, ARG_BITS = 8, 6, 12
INV_SCALE_BITS = 16  # 1/scale in 2^-16
CLAMP_SCALES = 8  # distances beyond 8 scales are clamped (Phi is 0 or 1 there)


def _standard_normal_cdf_table() -> np.ndarray:
    """Phi((i - 512) / 64) * 2^16, rounded, i = 0..1024, then one more 2^16 for the interpolation's edge."""
    half = PHI_RANGE << PHI_STEP_BITS
    values = [round(TOTAL * 0.5 * math.erfc(-((i - half) / (1 << PHI_STEP_BITS)) / math.sqrt(2.0)))
              for i in range(2 * half + 1)]  # fmt: skip
    return np.asarray([*values, TOTAL], np.int32)


def _log_scale_tables() -> tuple[np.ndarray, np.ndarray]:
    """(1/scale in 2^-16, rounded; 8 scales in 2^-10, floored) over the log-scale grid."""
    grid = np.arange(LOG_SCALE_MIN, LOG_SCALE_MAX + 1, dtype=np.float64) / (1 << PARAM_BITS)
    inv_scale = np.round(np.exp(-grid) * (1 << INV_SCALE_BITS)).astype(np.int32)
    max_distance = np.floor(np.exp(grid) * (CLAMP_SCALES << PARAM_BITS)).astype(np.int32)
    return inv_scale, max_distance


PHI_TABLE = _standard_normal_cdf_table()
INV_SCALE_TABLE, MAX_DISTANCE_TABLE = _log_scale_tables()
TABLES_SHA256 = "0d97f1ebc2860436600809dd48d17c65c1f4fd089f73b5405fc9c339ff10a775"


def tables_digest() -> str:
    """sha256 of the three fixed-point tables (int32 little-endian), the format's definition."""
    digest = hashlib.sha256()
    for table in (PHI_TABLE, INV_SCALE_TABLE, MAX_DISTANCE_TABLE):
        digest.update(table.astype("<i4").tobytes())
    return digest.hexdigest()


if tables_digest() != TABLES_SHA256:
    raise ImportError(
        "mscm_jax.coding.integer_cdf: this platform computes the fixed-point coding tables differently "
        "from the format's definition (digest mismatch); files written here would not decode elsewhere"
    )


class CodingError(ValueError):
    """A stream that does not decode to what was encoded, or a value that cannot be coded."""


# --------------------------------------------------------------------------
# Float parameters -> integer parameters (inside the compiled stage function).
# --------------------------------------------------------------------------


def num_parameter_rows(num_components: int) -> int:
    """Rows of `quantize_parameters`' output: centre, log2 T, then K means, log-scales, weights."""
    return 2 + 3 * num_components


def quantize_parameters(
    means: jax.Array, scales: jax.Array, weights: jax.Array, round_centre: bool
) -> jax.Array:
    """Each element's integer coding parameters: (2 + 3K, ...) int32.

    From (K, ...) float means, scales and weights. Rows:
      0: the centre in 2^-10 (the mixture mean, rounded to an integer when
         `round_centre`: symbols are then `round(y) - centre`);
      1: log2 of the half-width T;
      2..: the K means relative to the centre (2^-10), the K log-scale
         indices (into the tables, 0 = LOG_SCALE_MIN), the K weights (2^-14,
         each >= 1, summing to 2^14).
    Component-major, so every row is contiguous. The float part is the last
    step of the networks; everything after it is integer.
    """
    k = means.shape[0]
    grid = float(1 << PARAM_BITS)
    mean_q = jnp.round(jnp.clip(means.astype(jnp.float32), -(2.0**20), 2.0**20) * grid).astype(jnp.int32)
    log_scale = jnp.round(jnp.log(scales.astype(jnp.float32)) * grid)
    log_scale = jnp.clip(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX).astype(jnp.int32) - LOG_SCALE_MIN
    weight_q = _integer_weights(weights)
    # The mixture mean of the quantized parameters (K = 1: the mean itself).
    centre = sum(weight_q[c].astype(jnp.float32) * mean_q[c].astype(jnp.float32) for c in range(k))
    centre = centre / (1 << WEIGHT_BITS)
    if round_centre:
        centre = jnp.round(centre / grid) * grid
    centre = jnp.round(centre).astype(jnp.int32)
    return _parameter_rows(centre, mean_q, log_scale, weight_q)


def _parameter_rows(centre: jax.Array, mean_q: jax.Array, log_scale: jax.Array, weight_q: jax.Array):
    """The rows of `quantize_parameters` from the centre, the K means, log-scale indices and weights."""
    relative = jnp.clip(mean_q - centre, -MAX_RELATIVE_MEAN, MAX_RELATIVE_MEAN)
    log2_half_width = _log2_half_width(relative, log_scale)
    return jnp.concatenate([centre[None], log2_half_width[None], relative, log_scale, weight_q])


def _integer_weights(weights: jax.Array) -> jax.Array:
    """(K, ...) weights in 2^-14, each at least 1, summing to exactly 2^14 (the largest absorbs the rest)."""
    k, total = weights.shape[0], 1 << WEIGHT_BITS
    if k == 1:
        return jnp.full(weights.shape, total, jnp.int32)
    q = jnp.maximum(jnp.round(weights.astype(jnp.float32) * total), 1.0).astype(jnp.int32)
    return _absorb_excess(q)


def _absorb_excess(q: jax.Array) -> jax.Array:
    """Integer weights (K, ...), each >= 1, made to sum to exactly 2^14: the largest takes the difference."""
    k, total = q.shape[0], 1 << WEIGHT_BITS
    largest = jnp.argmax(q, axis=0)
    excess = sum(q[c] for c in range(k)) - total
    return q - jnp.where(jnp.arange(k).reshape(k, *[1] * (q.ndim - 1)) == largest, excess, 0)


# --------------------------------------------------------------------------
# Integer network outputs -> integer parameters (the integer path).
# --------------------------------------------------------------------------

SCALE_BITS = 16  # the integer path's scales in 2^-16
LOGIT_BITS = 8  # its mixture logits in 2^-8
SCALE_FLOOR = round(
    0.11 * (1 << SCALE_BITS)
)  # the model's lower bound on scales (entropy_models.SCALE_BOUND)
LN_BITS = 20  # natural logarithms computed in 2^-20


def _integer_path_tables() -> tuple[np.ndarray, np.ndarray, int]:
    """(ln(1 + i/1024) in 2^-20, i = 0..1024; exp(-i/256) in 2^-15, i = 0..4096; ln 2 in 2^-20)."""
    ln1p = np.asarray([round(math.log1p(i / 1024) * (1 << LN_BITS)) for i in range(1025)], np.int32)
    exp = np.asarray([round(math.exp(-i / (1 << LOGIT_BITS)) * (1 << 15)) for i in range(4097)], np.int32)
    return ln1p, exp, round(math.log(2.0) * (1 << LN_BITS))


LN1P_TABLE, EXP_TABLE, LN2_FIXED = _integer_path_tables()
INTEGER_TABLES_SHA256 = "348e4f95ef8ce4f78abf17eb7588bbc450c1bebf68db62883d84ece12e2772af"


def _integer_tables_digest() -> str:
    digest = hashlib.sha256(np.int32(LN2_FIXED).astype("<i4").tobytes())
    for table in (LN1P_TABLE, EXP_TABLE):
        digest.update(table.astype("<i4").tobytes())
    return digest.hexdigest()


if _integer_tables_digest() != INTEGER_TABLES_SHA256:
    raise ImportError(
        "mscm_jax.coding.integer_cdf: this platform computes the integer path's tables differently"
    )


def integer_log_scale(scale: jax.Array) -> jax.Array:
    """Log-scale indices (as `quantize_parameters`' row) of scales in 2^-16 (int32 >= 1), integer only.

    ln x = e ln 2 + ln(1 + f) for x = 2^e (1 + f); ln(1 + f) by linear
    interpolation of `LN1P_TABLE` on f's first 20 bits.
    """
    x = jnp.maximum(scale, SCALE_FLOOR)
    exponent = 31 - jax.lax.clz(x)
    normalized = x << (30 - exponent)  # the leading one at bit 30
    index, fraction = (normalized >> 20) & 1023, (normalized >> 10) & 1023
    table = jnp.asarray(LN1P_TABLE)
    ln1p = table[index] + (((table[index + 1] - table[index]) * fraction) >> 10)
    ln_scale = (exponent - SCALE_BITS) * LN2_FIXED + ln1p  # in 2^-20
    shift = LN_BITS - PARAM_BITS
    log_scale = (ln_scale + (1 << (shift - 1))) >> shift
    return jnp.clip(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX) - LOG_SCALE_MIN


def integer_weights(logits: jax.Array) -> jax.Array:
    """(K, ...) logits in 2^-8 (int32) -> softmax weights in 2^-14 as `_integer_weights`, integer only."""
    k = logits.shape[0]
    if k == 1:
        return jnp.full(logits.shape, 1 << WEIGHT_BITS, jnp.int32)
    top = functools.reduce(jnp.maximum, [logits[c] for c in range(k)])
    exps = jnp.asarray(EXP_TABLE)[jnp.minimum(top[None] - logits, len(EXP_TABLE) - 1)]  # the top one: 2^15
    total = functools.reduce(operator.add, [exps[c] for c in range(k)])  # <= K 2^15
    return _absorb_excess(jnp.maximum((exps << WEIGHT_BITS) // total, 1))


def integer_coding_parameters(
    means: jax.Array, scales: jax.Array, logits: jax.Array, round_centre: bool
) -> jax.Array:
    """`quantize_parameters`' rows from integer network outputs, with integer arithmetic only.

    (K, ...) int32 each: means in 2^-10, scales in 2^-16, logits in 2^-8. The
    centre, the weighted mean sum(w m) / 2^14, is split m = 2^10 hi + lo so
    that no product leaves int32: |w hi| <= 2^24, w lo < 2^24.
    """
    k = means.shape[0]
    mean_q = jnp.clip(means, -(1 << 20), 1 << 20)
    weight_q = integer_weights(logits)
    high = functools.reduce(operator.add, [weight_q[c] * (mean_q[c] >> PARAM_BITS) for c in range(k)])
    low = functools.reduce(
        operator.add, [weight_q[c] * (mean_q[c] & ((1 << PARAM_BITS) - 1)) for c in range(k)]
    )
    # round((2^10 high + low) / 2^14), high = 16 (high >> 4) + (high & 15)
    centre = (high >> 4) + (((high & 15) << PARAM_BITS) + low + (1 << (WEIGHT_BITS - 1)) >> WEIGHT_BITS)
    if round_centre:
        centre = ((centre + (1 << (PARAM_BITS - 1))) >> PARAM_BITS) << PARAM_BITS
    return _parameter_rows(centre, mean_q, integer_log_scale(scales), weight_q)


def _log2_half_width(relative_means: jax.Array, log_scale: jax.Array) -> jax.Array:
    """(...) log2 T: the smallest power of two (1..64) covering every component's mean +- 6 scales."""
    six_scales = (jnp.asarray(MAX_DISTANCE_TABLE)[log_scale] * 3) >> 2  # 8 scales * 3/4, in 2^-10
    reach = jnp.max(jnp.abs(relative_means) + six_scales, axis=0)
    return sum((reach > (1 << (PARAM_BITS + j))).astype(jnp.int32) for j in range(MAX_LOG2_HALF_WIDTH))


# --------------------------------------------------------------------------
# Integer CDFs.
# --------------------------------------------------------------------------


class CdfTables(NamedTuple):
    """The fixed-point tables `mixture_cdf` reads: arrays, or a Pallas kernel's refs of them."""

    phi: Any
    inv_scale: Any
    max_distance: Any


def cdf_tables() -> CdfTables:
    """The tables as NumPy arrays (a kernel takes them as inputs; `jnp.asarray` them otherwise)."""
    return CdfTables(PHI_TABLE, INV_SCALE_TABLE, MAX_DISTANCE_TABLE)


def standard_normal_cdf_fixed(t: jax.Array, table: Any = None) -> jax.Array:
    """Phi(t) in 2^-16 for t in 2^-12 (int32), by linear interpolation of `PHI_TABLE` (or `table`)."""
    table = jnp.asarray(PHI_TABLE) if table is None else table
    u = jnp.clip(t + (PHI_RANGE << ARG_BITS), 0, 2 * PHI_RANGE << ARG_BITS)
    shift = ARG_BITS - PHI_STEP_BITS
    index, fraction = u >> shift, u & ((1 << shift) - 1)
    low = table[index]
    return low + (((table[index + 1] - low) * fraction) >> shift)


def quantize_cdf(cdf: jax.Array, edge: jax.Array, num_bins: jax.Array) -> jax.Array:
    """CDF values in [0, 2^16] at edge j of B bins -> a 16-bit CDF whose every bin has mass >= 1.

    floor(c (2^16 - B) / 2^16) + j: one unit per bin is set aside, the rest
    follows c. Edge 0 is 0 and edge B is 2^16 whatever c says.
    """
    quantized = cdf - ((cdf * num_bins + (TOTAL - 1)) >> PRECISION) + edge
    return jnp.where(edge <= 0, 0, jnp.where(edge >= num_bins, TOTAL, quantized))


def mixture_cdf(params: jax.Array, edge: jax.Array, tables: CdfTables | None = None) -> jax.Array:
    """16-bit CDF at bin edge `edge` (0..B) of elements with integer parameters `params` (2 + 3K, ...).

    Edge j is the lower edge of bin j, i.e. of the offset `j - T`, at `j - T - 1/2`.
    Bounds (all int32): |distance| <= 8 scales <= 2^21 units, times 1/scale
    (<= 2^16 / 0.105) stays below 2^30; weights (sum 2^14) times Phi (<= 2^16)
    sum to at most 2^30. `params` may also be a sequence of its rows, and
    `tables` a kernel's refs (`rans_kernel`); by default the module's tables.
    """
    k = (len(params) - 2) // 3
    if tables is None:
        tables = CdfTables(*map(jnp.asarray, cdf_tables()))
    half_width = 1 << params[1]
    position = ((edge - half_width) << PARAM_BITS) - (1 << (PARAM_BITS - 1))
    mass = jnp.zeros(edge.shape, jnp.int32)
    for c in range(k):
        log_scale = params[2 + k + c]
        limit = tables.max_distance[log_scale]
        distance = jnp.clip(position - params[2 + c], -limit, limit)
        t = (distance * tables.inv_scale[log_scale]) >> (PARAM_BITS + INV_SCALE_BITS - ARG_BITS)
        mass = mass + params[2 + 2 * k + c] * standard_normal_cdf_fixed(t, tables.phi)
    return quantize_cdf(mass >> WEIGHT_BITS, edge, 2 * half_width + 1)


def half_widths(params: jax.Array) -> jax.Array:
    return 1 << params[1]


# --------------------------------------------------------------------------
# z: per-channel tables.
# --------------------------------------------------------------------------


def quantize_pmf(pmf: np.ndarray) -> np.ndarray:
    """(N, B) probabilities (rows need not sum to 1) -> (N, B + 1) int32 16-bit CDFs, every bin >= 1.

    NumPy float64 on the host, once per model; model files store the result,
    so decoders never recompute it.
    """
    pmf = np.maximum(np.asarray(pmf, np.float64), 0.0)
    cumulative = np.cumsum(pmf, axis=1)
    cumulative = cumulative / np.maximum(cumulative[:, -1:], 1e-300)
    cdf = np.round(np.concatenate([np.zeros((len(pmf), 1)), cumulative], axis=1) * TOTAL).astype(np.int64)
    edges = np.arange(pmf.shape[1] + 1)
    out = np.asarray(quantize_cdf(jnp.asarray(cdf, jnp.int32), jnp.asarray(edges, jnp.int32), pmf.shape[1]))
    return out.astype(np.int32)


def table_half_width(tables: Any) -> int:
    """T of CDF tables (N, 2T + 2): rows of 2T + 1 bins, offsets -T..T."""
    return (tables.shape[1] - 2) // 2


def table_cdf(tables: jax.Array, row: jax.Array, edge: jax.Array) -> jax.Array:
    """CDF values `tables[row, edge]` (edges beyond the table read 2^16)."""
    return jnp.where(edge >= tables.shape[1], TOTAL, tables[row, jnp.minimum(edge, tables.shape[1] - 1)])


def symbol_checksum(
    offsets: jax.Array, segment: int | jax.Array, length: int | jax.Array | None = None
) -> jax.Array:
    """uint32 checksum of a segment's symbols: a sum modulo 2^32 of mixed (segment, index, value).

    A sum, so that any backend, summing in any order, gets the same bits.
    `length` (may be traced): only the first `length` entries count, so that
    entries padded past it (a size bucket's, `codec.Codec`) leave it unchanged.
    """
    index = jnp.arange(offsets.shape[0], dtype=jnp.uint32)
    v = offsets.astype(jnp.uint32) ^ (index * jnp.uint32(0x9E3779B1))
    v = (v ^ (jnp.asarray(segment).astype(jnp.uint32) * jnp.uint32(0x85EBCA77))) * jnp.uint32(0xCC9E2D51)
    v = v ^ (v >> 15)
    if length is not None:
        v = jnp.where(index < jnp.asarray(length).astype(jnp.uint32), v, jnp.uint32(0))
    return jnp.sum(v, dtype=jnp.uint32)
