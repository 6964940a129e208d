"""The integer entropy-parameter path: every number that shapes a coding distribution, in integers.

Ballé, Johnston, Minnen, "Integer Networks for Data Compression with
Latent-Variable Models", ICLR 2019: a file decodes only if the decoder
computes the encoder's distributions bit for bit, and float networks do
not (fused multiply-adds, summation orders and backends differ in the last
bit, and some of an image's ~10^6 parameters then cross a grid boundary).
Here the hyper-synthesis, the stage context and the entropy-parameter
network run on integers, with integer accumulation, so every backend gets
the same numbers; the analysis and synthesis stay float (they change the
pixels, not the decodability).

Fixed point. Every activation channel c holds `a * 2^-f[c]` with `a` an int8
(z's symbols: int16) and a power-of-two exponent `f[c]`; these scales are
folded into the next layer's weights, which are int8 with one power-of-two
scale per output channel: `W[i, o] = round(w[i, o] 2^-f[i] 2^e[o])`. The
accumulator is int32 in 2^-e[o]; moving it to the next activation's 2^-f is
a rounding shift, so no layer needs a multiplier (`rescale`). Calibration
(`convert`) picks `f` from each channel's values on a few images:

- centred inputs (y_hat's taps, the first dense layer's) use the whole int8
  range for the largest |value|, values beyond are clipped;
- a LeakyReLU's outputs lie almost all on one side of zero, so they are read
  as int8 codes around a per-channel zero point (`_fit_activation`, one bit
  of headroom), the consumer's bias absorbing `W^T zero_point`, and the
  LeakyReLU rounds to nearest (a floor would shift every negative value by up
  to a code, about 1 % of rate);
- z's symbols stay int16 with one bit of headroom: clipping a symbol the
  calibration images never reached would lose it.

So every layer but the first hyper-synthesis one is one int8 x int8 product
(`ops.integer_dot`; int16 inputs take two). Against the float path this
costs no rate (docs/format.md has the figures). Paths converted by mscm-jax
0.2.0 read int16 activations with a flooring LeakyReLU and no zero points;
which inputs are int8 follows from the stored values (`int8_inputs`), so
both kinds decode.

Why nothing overflows. For an output channel o, every partial sum of the
accumulation is at most `sum_i |W[i, o]| * A + |b[o]|` in magnitude, where
`A` is the input's clip limit; `convert` lowers `A` until this bound is
below 2^30 for every layer, and `check_bounds` proves it again for any model
file before it is used. Integer addition is associative, so the result is
the same in any summation order, on every backend. The float inputs (y_hat,
and nothing else) enter through exact operations only: a multiplication by a
power of two, a rounding, a clip.

The outputs are the entropy parameters on the coding grid (means in 2^-10,
scales in 2^-16, mixture logits in 2^-8), from which
`integer_cdf.integer_coding_parameters` builds the integer parameter rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.coding import integer_cdf
from mscm_jax.model import layers
from mscm_jax.model.context import StageKernel, read_stage, stage_context
from mscm_jax.model.ops import INT8_SPLIT_MARGIN, integer_dot, pixel_shuffle
from mscm_jax.model.schedules import StagePlan
from mscm_jax.model.transforms import LinearStep

WEIGHT_LIMIT = 127  # int8 weights and int8 inputs
MAX_ACTIVATION_BITS = 15  # int16 inputs: z's
ACTIVATION_LIMIT = (1 << 15) - 1  # the clip of activations read through zero points
ACCUMULATOR_BOUND = 1 << 30  # proven bound on |partial sums| (+ the rounding term: below 2^31)
OUTPUT_LIMIT = 1 << 24  # the last layer's outputs (means, scales, logits)
MAX_SHIFT = 30
LEAKY_SLOPE, LEAKY_BITS = 655, 16  # LeakyReLU slope 0.01 ~ 655 / 2^16
HEADROOM = {16: 2.0, 8: 1.0}  # int16 inputs: calibrated maxima use half the range; centred int8: all of it
ACTIVATION_HEADROOM, MIN_ACTIVATION_WIDTH = 2.0, 2.0**-6  # zero points: see `_fit_activation`
MAX_EXPONENT = 24  # exponents of channels that were always zero in calibration
Z_MAX_EXPONENT, Y_MAX_EXPONENT = 16, integer_cdf.PARAM_BITS  # y_hat lies on the 2^-10 grid


class IntegerLayer(NamedTuple):
    """One integer convolution or dense layer.

    weight: int8 (..., I, O), input scales folded in; bias: int32 (O,) in the
    accumulator's 2^-e[o]; shift: int32 (O,) accumulator -> output (right,
    rounding; negative: left); limit: int32 (), outputs are clipped to +-limit.
    The context layer has a leading axis of weight sets on all but `limit`.
    """

    weight: jax.Array
    bias: jax.Array
    shift: jax.Array
    limit: jax.Array


class IntegerPath(NamedTuple):
    """The integer parameters of one model (`convert`), stored in its model file.

    z_exponent, z_offset: (N,) z_hat enters as `symbol 2^f + round(median 2^f)`;
    y_exponent: (M,) y_hat enters as `round(y_hat 2^f)`; z_limit, y_limit: their clips.
    hyper_zero_points, network_zero_points: int32 (I,) per layer after the
    first, whose input (an activation) it reads as int8 `clip(x - zero_point,
    -127, 127)`; empty in paths converted before zero points (mscm-jax 0.2.0),
    whose inputs are centred (int16, or int8 where the clip limit allows).
    """

    z_exponent: jax.Array
    z_offset: jax.Array
    z_limit: jax.Array
    hyper: tuple[IntegerLayer, ...]
    y_exponent: jax.Array
    y_limit: jax.Array
    context: IntegerLayer
    network: tuple[IntegerLayer, ...]
    hyper_zero_points: tuple[jax.Array, ...] = ()
    network_zero_points: tuple[jax.Array, ...] = ()


for _cls in (IntegerLayer, IntegerPath):
    jax.export.register_namedtuple_serialization(
        _cls, serialized_name=f"mscm_jax.coding.integer_path.{_cls.__name__}"
    )


class Int8Inputs(NamedTuple):
    """Which layers read int8 inputs (one int8 product each): static, one compiled program per value.

    hyper: per hyper-synthesis layer; context: the context's (y_hat taps);
    network: per entropy-parameter layer. All False (the default) computes the
    same numbers with two products per layer.
    """

    hyper: tuple[bool, ...] = ()
    context: bool = False
    network: tuple[bool, ...] = ()


def _layer_inputs(path: IntegerPath) -> list[tuple[str, IntegerLayer, int]]:
    """(name, layer, clip limit of its input) of every layer of `path` (concrete), in order."""

    def after(previous, zero_points):  # an input read through zero points is clipped to int8
        return [WEIGHT_LIMIT if zero_points else int(layer.limit) for layer in previous]

    named = [(f"hyper{i}", layer) for i, layer in enumerate(path.hyper)]
    limits = [int(path.z_limit), *after(path.hyper[:-1], path.hyper_zero_points)]
    if path.network:
        named.append(("context", path.context))
        limits.append(int(path.y_limit))
        named += [(f"network{i}", layer) for i, layer in enumerate(path.network)]
        limits += [max(int(path.hyper[-1].limit), int(path.context.limit))]
        limits += after(path.network[:-1], path.network_zero_points)
    return [(name, layer, limit) for (name, layer), limit in zip(named, limits, strict=True)]


def int8_inputs(path: IntegerPath) -> Int8Inputs:
    """The layers of `path` (concrete) whose inputs are int8: clipped to its range by the layer
    before, or read through zero points."""
    fits = {name: limit <= WEIGHT_LIMIT for name, _, limit in _layer_inputs(path)}
    return Int8Inputs(
        tuple(fits[f"hyper{i}"] for i in range(len(path.hyper))),
        fits.get("context", False),  # read only with a parameter network
        tuple(fits[f"network{i}"] for i in range(len(path.network))),
    )


WIDE_INPUTS = Int8Inputs()  # every input int16 (two products): right for any path


# --------------------------------------------------------------------------
# Integer operations.
# --------------------------------------------------------------------------


def rescale(acc: jax.Array, shift: jax.Array, limit: jax.Array) -> jax.Array:
    """int32 accumulator -> output activation: `round(acc 2^-shift)`, clipped to +-limit.

    Right shifts round half up; a left shift clips first, so nothing wraps.
    """
    right = jnp.maximum(shift, 0)
    left = jnp.maximum(-shift, 0)
    down = (acc + ((jnp.int32(1) << right) >> 1)) >> right
    up = jnp.clip(acc, -(limit >> left), limit >> left) << left
    return jnp.clip(jnp.where(shift >= 0, down, up), -limit, limit)


def leaky_relu(x: jax.Array, rounded: bool = False) -> jax.Array:
    """Integer LeakyReLU, slope 655 / 2^16: |x| < 2^15 keeps the product below 2^25.

    Negative values round down, or with `rounded` to nearest (half up). An
    activation read as int8 codes needs `rounded`: flooring would move almost
    every negative value by up to a whole code, a bias that costs about 1 % of
    rate; paths converted before zero points floor their int16 activations.
    """
    half = (1 << (LEAKY_BITS - 1)) if rounded else 0
    return jnp.where(x >= 0, x, (x * LEAKY_SLOPE + half) >> LEAKY_BITS)


def _as_power_of_two(exponent: jax.Array) -> jax.Array:
    """float32 2^exponent, built from its bits (exact on every backend; |exponent| < 127)."""
    return jax.lax.bitcast_convert_type((exponent.astype(jnp.int32) + 127) << 23, jnp.float32)


def _patches(x: jax.Array, step: LinearStep) -> jax.Array:
    """(B, H, W, C) -> (B, H', W', k k C) windows in the weight's (ky, kx, c) order (PyTorch padding)."""
    k, s = step.kernel_size, step.stride
    if step.kind == "deconv":  # a stride-1 convolution over the input dilated by s (layers.ConvTranspose2d)
        b, h, w, c = x.shape
        dilated = jnp.zeros((b, (h - 1) * s + 1, (w - 1) * s + 1, c), x.dtype).at[:, ::s, ::s].set(x)
        before, after = layers.transposed_padding(k, s)
        x, s = jnp.pad(dilated, ((0, 0), (before, after), (before, after), (0, 0))), 1
    else:
        x = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    out_h, out_w = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    windows = [x[:, dy : dy + s * (out_h - 1) + 1 : s, dx : dx + s * (out_w - 1) + 1 : s]
               for dy in range(k) for dx in range(k)]  # fmt: skip
    return jnp.concatenate(windows, axis=-1)


def linear(
    x: jax.Array,
    layer: IntegerLayer,
    step: LinearStep | None,
    activation: str | None,
    int8: bool = False,
    zero_point: jax.Array | None = None,
    codes_out: bool = False,
) -> jax.Array:
    """One integer layer: a convolution (`step`) or dense layer (None), rescaled, activated (int32).

    `int8`: the input is known to lie in int8's range (one product instead of
    two); `zero_point` (I,): the layer reads int8 `clip(x - zero_point, -127, 127)`;
    `codes_out`: the next layer reads the output through zero points (`leaky_relu`'s rounding).
    The zero points are subtracted from the windows, after the padding (and
    the transposed convolution's inserted zeros), which stay zeros of x.
    """
    if int8 and zero_point is None:
        x = x.astype(jnp.int8)
    if step is not None:
        x = _patches(x, step)
    if zero_point is not None:
        centred = x - jnp.tile(zero_point, x.shape[-1] // zero_point.shape[0])
        x = jnp.clip(centred, -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(jnp.int8)
    acc = integer_dot(x, layer.weight.reshape(-1, layer.weight.shape[-1]))
    out = rescale(acc + layer.bias, layer.shift, layer.limit)
    if step is not None and step.shuffle > 1:
        out = pixel_shuffle(out, step.shuffle)
    return leaky_relu(out, codes_out) if activation == "leaky_relu" else out


# --------------------------------------------------------------------------
# The path: hyper-synthesis, stage context, entropy parameters.
# --------------------------------------------------------------------------


def hyper_synthesis(
    path: IntegerPath, steps: tuple[LinearStep, ...], z_symbols: jax.Array, int8: Int8Inputs = WIDE_INPUTS
) -> jax.Array:
    """z's symbols (offsets from the median, int32 (B, h, w, N)) -> hyper features (int32)."""
    z = jnp.clip(z_symbols, -(1 << 14), 1 << 14) << path.z_exponent
    x = jnp.clip(z + path.z_offset, -path.z_limit, path.z_limit)
    narrow = int8.hyper or (False,) * len(steps)
    zero_points = _zero_points(path.hyper_zero_points, len(steps))
    for i, (step, layer, fits) in enumerate(zip(steps, path.hyper, narrow, strict=True)):
        x = linear(x, layer, step, step.activation, fits, zero_points[i], zero_points[i + 1] is not None)
    return x


def _zero_points(stored: tuple[jax.Array, ...], count: int) -> tuple[jax.Array | None, ...]:
    """Per layer and one past the last, its input's zero points or None.

    The first layer's input is never an activation, the one past the last
    (the outputs) never has zero points.
    """
    return (None, *stored, None) if stored else (None,) * (count + 1)


def latent_input(path: IntegerPath, y_hat: jax.Array, int8: bool = False) -> jax.Array:
    """y_hat (float, on the 2^-10 grid) -> the context's int16 (or int8) input, by exact operations only."""
    scaled = jnp.round(y_hat * _as_power_of_two(path.y_exponent))
    limit = path.y_limit.astype(jnp.float32)
    return jnp.clip(scaled, -limit, limit).astype(jnp.int8 if int8 else jnp.int16)


def stage_parameters(
    path: IntegerPath,
    plan: StagePlan,
    stage: jax.Array,
    y_hat: jax.Array,
    hyper: jax.Array,
    kernel: StageKernel,
    num_mixtures: int,
    round_centre: bool,
    int8: Int8Inputs = WIDE_INPUTS,
) -> jax.Array:
    """Integer coding parameters (2 + 3K, P, B, h, w, M) of stage `stage`'s elements.

    The integer counterpart of `CompressionModel.stage_entropy_parameters`
    followed by `integer_cdf.quantize_parameters`; `kernel` holds the stage's
    int8 context weights (`StageKernel`); `int8` is `int8_inputs(path)`.
    """
    features = read_stage(plan, hyper, stage)
    if path.network:
        m = y_hat.shape[-1]
        if kernel.taps.shape[0]:
            acc = stage_context(plan, kernel, stage, latent_input(path, y_hat, int8.context), None, True)
            weight_set = jnp.asarray(plan.weight_index)[stage]
            context = rescale(acc + path.context.bias[weight_set], path.context.shift[weight_set],
                              path.context.limit)  # fmt: skip
            context = jnp.where(kernel.context.any(), context, 0)
        else:  # no context weights (`hyperprior`)
            context = jnp.zeros((*features.shape[:-1], 2 * m), jnp.int32)
        x = jnp.concatenate([features, context], axis=-1)
        narrow = int8.network or (False,) * len(path.network)
        zero_points = _zero_points(path.network_zero_points, len(path.network))
        for i, (layer, fits) in enumerate(zip(path.network, narrow, strict=True)):
            activation = "leaky_relu" if i < len(path.network) - 1 else None
            x = linear(x, layer, None, activation, fits, zero_points[i], zero_points[i + 1] is not None)
        features = x
    return _coding_parameters(features, num_mixtures, round_centre)


def _coding_parameters(outputs: jax.Array, k: int, round_centre: bool) -> jax.Array:
    """Last layer outputs (..., chunks K M): scales, means, logits -> integer parameter rows."""
    chunks = 2 if k == 1 else 3
    m = outputs.shape[-1] // (chunks * k)
    parts = jnp.moveaxis(outputs.reshape(*outputs.shape[:-1], chunks, k, m), (-3, -2), (0, 1))
    logits = parts[2] if k > 1 else jnp.zeros_like(parts[1])
    return integer_cdf.integer_coding_parameters(parts[1], parts[0], logits, round_centre)


def _head_exponents(out_channels: int, k: int) -> np.ndarray:
    """The last layer's output exponents: scales in 2^-16, means in 2^-10, logits in 2^-8."""
    chunks = 2 if k == 1 else 3
    bits = (integer_cdf.SCALE_BITS, integer_cdf.PARAM_BITS, integer_cdf.LOGIT_BITS)[:chunks]
    return np.repeat(np.asarray(bits, np.int64), out_channels // chunks)


# --------------------------------------------------------------------------
# Bounds: the proof that no accumulator leaves int32.
# --------------------------------------------------------------------------


def _worst_case(layer: IntegerLayer, input_limit: int) -> int:
    """Largest |partial sum| + rounding term over the layer's output channels (and weight sets).

    A partial sum of `ops.integer_dot` reaches sum|w| (input_limit + INT8_SPLIT_MARGIN).
    """
    weight = np.abs(np.asarray(layer.weight, np.int64))
    if weight.size == 0:  # no context weights (`hyperprior`)
        return 0
    sets = weight.shape[:1] if weight.ndim == 5 else ()  # the context layer: (sets, k, k, M, 2M)
    l1 = weight.reshape(*sets, -1, weight.shape[-1]).sum(-2)
    rounding = (1 << np.maximum(np.asarray(layer.shift, np.int64), 0)) >> 1
    bias = np.abs(np.asarray(layer.bias, np.int64))
    return int(np.max(l1 * (input_limit + INT8_SPLIT_MARGIN) + bias + rounding, initial=0))


def check_bounds(path: IntegerPath) -> dict[str, int]:
    """Each layer's proven bound on |accumulator|; ValueError if any could leave int32.

    Also checks the ranges the operations assume: int8 weights, int16 inputs,
    shifts below 31.
    """
    bounds = {}
    for name, layer, limit in _layer_inputs(path):
        weight = np.asarray(layer.weight)
        if weight.dtype != np.int8 or np.any(np.abs(np.asarray(layer.shift)) > MAX_SHIFT):
            raise ValueError(
                f"integer path layer {name}: weights must be int8 and shifts at most {MAX_SHIFT}"
            )
        if limit >= 1 << MAX_ACTIVATION_BITS and weight.size:
            raise ValueError(f"integer path layer {name}: input limit {limit} exceeds int16")
        bounds[name] = _worst_case(layer, limit)
        if bounds[name] >= 1 << 31:
            raise ValueError(f"integer path layer {name}: accumulators may reach {bounds[name]} >= 2^31")
    _check_zero_points("hyper", path.hyper_zero_points, path.hyper)
    _check_zero_points("network", path.network_zero_points, path.network)
    return bounds


def _check_zero_points(kind: str, stored: tuple, consumers: tuple[IntegerLayer, ...]) -> None:
    """None, or one int32 zero point per input channel of every layer after the first, within int8."""
    if not stored:
        return
    if len(stored) != len(consumers) - 1:
        raise ValueError(
            f"integer path: {len(stored)} {kind} zero point sets for {len(consumers) - 1} layers"
        )
    for i, (zero_point, layer) in enumerate(zip(stored, consumers[1:], strict=True), 1):
        zero_point = np.asarray(zero_point)
        channels = np.asarray(layer.weight).shape[-2]
        if zero_point.dtype != np.int32 or zero_point.shape != (channels,):
            raise ValueError(f"integer path layer {kind}{i}: zero points must be int32 ({channels},)")
        if np.any(np.abs(zero_point) > WEIGHT_LIMIT):
            raise ValueError(f"integer path layer {kind}{i}: zero points beyond +-{WEIGHT_LIMIT}")


# --------------------------------------------------------------------------
# Conversion from a float model (post-training, calibrated).
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Quantized:
    weight: np.ndarray  # int8
    bias: np.ndarray  # int64 until the shift is known
    exponent: np.ndarray  # accumulator exponent e per output channel


def _quantize_weights(w: np.ndarray, b: np.ndarray | None, in_exponent: np.ndarray) -> _Quantized:
    """Float weights (..., I, O) for inputs in 2^-in_exponent -> int8, one power-of-two scale per output."""
    effective = np.asarray(w, np.float64) * np.exp2(-in_exponent.astype(np.float64))[:, None]
    peak = np.abs(effective).reshape(-1, effective.shape[-1]).max(0)
    exponent = np.where(peak > 0, np.floor(np.log2(WEIGHT_LIMIT / np.maximum(peak, 1e-300))), 0)
    exponent = np.clip(exponent, -MAX_SHIFT, 60).astype(np.int64)
    weight = np.clip(np.round(effective * np.exp2(exponent)), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int8)
    bias = np.zeros(w.shape[-1]) if b is None else np.asarray(b, np.float64)
    return _Quantized(weight, np.round(bias * np.exp2(exponent)).astype(np.int64), exponent)


def _input_exponents(peak: np.ndarray, limit: int, cap: int, floor: int, headroom: float) -> np.ndarray:
    """Per channel, the largest exponent f <= cap with peak 2^f * headroom <= limit."""
    safe = np.maximum(np.asarray(peak, np.float64), 1e-30)
    f = np.floor(np.log2(limit / (headroom * safe)))
    return np.clip(np.where(peak > 0, f, cap), floor, cap).astype(np.int64)


def _fit_input(peak: np.ndarray, consumers: list, cap: int, floor: int = -MAX_SHIFT, width: int = 8):
    """(exponents, limit, quantized consumers) of a centred tensor read by `consumers` [(w, b)].

    The widest range of an int`width` (or narrower) whose accumulator bound stays below 2^30.
    """
    for bits in range(width - 1, 3, -1):
        limit = (1 << bits) - 1
        exponent = _input_exponents(peak, limit, cap, floor, HEADROOM[width])
        quantized = [_quantize_weights(w, b, exponent) for w, b in consumers]
        if max(_bound(q, limit) for q in quantized) < ACCUMULATOR_BOUND:
            return exponent, limit, quantized
    raise ValueError(_TOO_WIDE)


_TOO_WIDE = "the integer path cannot bound this model's accumulators below 2^30 (weights too wide)"


def _fit_activation(low: np.ndarray, high: np.ndarray, consumer: tuple, cap: int):
    """(exponents, zero points, quantized consumer) of an activation read as int8 around zero points.

    A LeakyReLU's outputs lie almost all on one side of zero, so a centred
    int8 range would leave half its codes unused: each channel's codes are
    centred on its calibrated [low, high] instead (with 0 inside, so padding
    stays exact), with one bit of headroom. A channel narrower than 2^-6 of
    the widest gets that width: one that was quiet on the calibration images
    is then not clipped to nothing on others. The consumer's bias absorbs
    `sum_i W[i, o] zero_point[i]`.
    """
    low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    width = np.maximum(high - low, MIN_ACTIVATION_WIDTH * np.max(high - low))
    # Codes -127..127 around the centre: half the width must fit in 127, as a centred peak would.
    exponent = _input_exponents(width / 2, WEIGHT_LIMIT, cap, -MAX_SHIFT, ACTIVATION_HEADROOM)
    zero_point = np.round((high + low) / 2 * np.exp2(exponent)).astype(np.int64)
    q = _quantize_weights(*consumer, exponent)
    weight = q.weight.astype(np.int64).reshape(-1, len(zero_point), q.weight.shape[-1])
    q.bias = q.bias + np.einsum("kio,i->o", weight, zero_point)
    if _bound(q, WEIGHT_LIMIT) >= ACCUMULATOR_BOUND:
        raise ValueError(_TOO_WIDE)
    return exponent, zero_point.astype(np.int32), q


def _bound(q: _Quantized, limit: int) -> int:
    """`_worst_case` before the output shifts are known (no rounding term)."""
    return _worst_case(IntegerLayer(q.weight, q.bias, np.zeros_like(q.bias), limit), limit)


def _finish(q: _Quantized, out_exponent: np.ndarray, limit: int) -> IntegerLayer:
    shift = np.clip(q.exponent - out_exponent, -MAX_SHIFT, MAX_SHIFT)
    return IntegerLayer(q.weight, q.bias.astype(np.int32), shift.astype(np.int32), np.int32(limit))


def convert(model, params: Any, images: list[np.ndarray]) -> IntegerPath:
    """The integer path of a float model, calibrated on `images` (uint8 (H, W, 3), any sizes).

    Post-training: the float weights are quantized as the module docstring
    says, with activation exponents from the channels' largest values on the
    images. Raises ValueError if no bound below 2^30 exists.
    """
    config = model.config
    peaks = _calibrate(model, params, images)
    p = params["params"]
    steps = config.transform_family.hyper_synthesis_steps
    k, m = config.num_mixtures, config.M

    def weights(tree, name):
        node = _node(tree, name)
        return np.asarray(node["kernel"]), np.asarray(node["bias"])

    # z_hat -> the hyper-synthesis.
    z_exponent, z_limit, (first,) = _fit_input(  # int16: z's symbols are exact, so not clipped
        peaks["z"], [weights(p["h_s"], steps[0].name)], Z_MAX_EXPONENT, 0, width=16
    )
    median = np.asarray(model.apply(params, method=type(model).z_median), np.float64)
    z_offset = np.round(median * np.exp2(z_exponent)).astype(np.int32)
    hyper, hyper_zero_points, pending = [], [], first
    for i, step in enumerate(steps[1:], 1):  # each step's output exponents are its consumer's input exponents
        name = f"hyper{i - 1}"
        exponent, zero_point, q = _fit_activation(
            -peaks[f"{name}-"], peaks[f"{name}+"], weights(p["h_s"], step.name), MAX_EXPONENT
        )
        hyper.append(_finish(pending, np.repeat(exponent, steps[i - 1].shuffle ** 2), ACTIVATION_LIMIT))
        hyper_zero_points.append(zero_point)
        pending = q
    context_params = p.get("context", {})  # none without context weights and parameter network
    context_sets = np.asarray(context_params.get("context_kernel", np.zeros((0, 5, 5, m, 2 * m))))
    context_bias = context_params.get("context_bias")
    empty_context = IntegerLayer(np.zeros((0, 5, 5, m, 2 * m), np.int8), np.zeros((0, 2 * m), np.int32),
                                 np.zeros((0, 2 * m), np.int32), np.int32(0))  # fmt: skip
    if not config.entropy_parameter_network:
        hyper.append(_finish(pending, _head_exponents(2 * m, 1), OUTPUT_LIMIT))
        return _path(z_exponent, z_offset, z_limit, hyper, np.zeros(m, np.int32), 0, empty_context, [],
                     hyper_zero_points, [])  # fmt: skip

    net = p["context"]["entropy_parameters"]
    dense = [weights(net, (f"dense{i}",)) for i in range(3)]
    # y_hat -> the context sets (one exponent per channel, shared by every set).
    if len(context_sets):
        y_exponent, y_limit, sets = _fit_input(
            peaks["y"],
            [
                (context_sets[s], None if context_bias is None else context_bias[s])
                for s in range(len(context_sets))
            ],
            Y_MAX_EXPONENT,
        )
    else:
        y_exponent, y_limit, sets = np.zeros(m, np.int64), 0, []
    # hyper features and context -> the first dense layer.
    inputs_peak = np.concatenate([peaks[f"hyper{len(steps) - 1}"], peaks["context"]])
    exponent, limit, (d0,) = _fit_input(inputs_peak, [dense[0]], MAX_EXPONENT)
    hyper.append(_finish(pending, exponent[: 2 * m], limit))
    context = empty_context
    if sets:
        layers = [_finish(q, exponent[2 * m :], limit) for q in sets]
        stacked = [np.stack([layer[i] for layer in layers]) for i in range(3)]
        context = IntegerLayer(*stacked, np.int32(limit))
    network, network_zero_points, pending = [], [], d0
    for i in (1, 2):
        name = f"network{i - 1}"
        exponent, zero_point, q = _fit_activation(
            -peaks[f"{name}-"], peaks[f"{name}+"], dense[i], MAX_EXPONENT
        )
        network.append(_finish(pending, exponent, ACTIVATION_LIMIT))
        network_zero_points.append(zero_point)
        pending = q
    network.append(_finish(pending, _head_exponents(dense[2][0].shape[-1], k), OUTPUT_LIMIT))
    return _path(z_exponent, z_offset, z_limit, hyper, y_exponent, y_limit, context, network,
                 hyper_zero_points, network_zero_points)  # fmt: skip


def _path(z_exponent, z_offset, z_limit, hyper, y_exponent, y_limit, context, network,
          hyper_zero_points, network_zero_points) -> IntegerPath:  # fmt: skip
    path = IntegerPath(
        np.asarray(z_exponent, np.int32), np.asarray(z_offset, np.int32), np.int32(z_limit),
        tuple(hyper), np.asarray(y_exponent, np.int32), np.int32(y_limit), context, tuple(network),
        tuple(hyper_zero_points), tuple(network_zero_points),
    )  # fmt: skip
    check_bounds(path)
    return jax.device_put(path)


def _node(tree: Any, name: tuple[str, ...]) -> Any:
    """The parameters of the layer at path `name` of `tree`."""
    for key in name:
        tree = tree[key]
    return tree


def _float_step(x: jax.Array, tree: Any, step: LinearStep) -> jax.Array:
    """The float convolution `step`, by the Flax layer the model uses, before its activation."""
    node = _node(tree, step.name)
    layer = layers.ConvTranspose2d if step.kind == "deconv" else layers.Conv2d
    y = layer(node["kernel"].shape[-1], step.kernel_size, step.stride).apply({"params": node}, x)
    return pixel_shuffle(y, step.shuffle) if step.shuffle > 1 else y


def float_hyper_synthesis(params: Any, steps: tuple[LinearStep, ...], z_hat: jax.Array) -> list[jax.Array]:
    """Each step's output (after any pixel shuffle, before the activation): the float path, step by step."""
    outputs, x = [], z_hat
    for step in steps:
        y = _float_step(x, params["params"]["h_s"], step)
        outputs.append(y)
        x = layers.leaky_relu(y) if step.activation == "leaky_relu" else y
    return outputs


def _calibrate(model, params: Any, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per channel, over `images`: the largest |value| of every centred tensor the integer path
    quantizes, and the largest value (`name+`) and largest negated value (`name-`) of every activation.
    """
    from mscm_jax.model.compression_model import CompressionModel

    config = model.config
    steps = config.transform_family.hyper_synthesis_steps
    peak = lambda a: jnp.max(jnp.abs(a.reshape(-1, a.shape[-1])), axis=0)  # noqa: E731

    def extremes(name, a):
        a = layers.leaky_relu(a).reshape(-1, a.shape[-1])
        return {f"{name}+": jnp.max(a, axis=0), f"{name}-": jnp.max(-a, axis=0)}

    def statistics(params, x):
        y = model.apply(params, x, method=CompressionModel.analysis)
        z = model.apply(params, y, method=CompressionModel.hyper_analysis)
        median = model.apply(params, method=CompressionModel.z_median)
        z_hat = jnp.round(z - median) + median
        hyper_steps = float_hyper_synthesis(params, steps, z_hat)
        out = {"z": peak(z_hat), f"hyper{len(steps) - 1}": peak(hyper_steps[-1])}
        for i, h in enumerate(hyper_steps[:-1]):
            out.update(extremes(f"hyper{i}", h))
        if not config.entropy_parameter_network:
            return out
        hyper = hyper_steps[-1]
        y_hat = model.apply(params, y, hyper, method=CompressionModel.quantize_latent)
        context = model.apply(params, y_hat, method=CompressionModel.all_stage_contexts)
        inputs = jnp.concatenate([hyper, context], axis=-1)
        out["y"], out["context"] = peak(y_hat), peak(context)
        net = params["params"]["context"]["entropy_parameters"]
        x = inputs
        for i in range(2):
            x = x @ net[f"dense{i}"]["kernel"] + net[f"dense{i}"]["bias"]
            out.update(extremes(f"network{i}", x))
            x = layers.leaky_relu(x)
        return out

    run = jax.jit(statistics)
    peaks: dict[str, np.ndarray] = {}
    for image in images:
        x = jnp.asarray(np.asarray(image, np.float32) / 255.0)[None]
        for name, value in run(params, x).items():
            peaks[name] = np.maximum(peaks.get(name, -np.inf), np.asarray(value, np.float64))
    return peaks


# --------------------------------------------------------------------------
# Storage.
# --------------------------------------------------------------------------


def to_state(path: IntegerPath) -> dict[str, Any]:
    """Plain nested dicts of NumPy arrays (model files store them with MessagePack)."""
    layer = lambda x: {k: np.asarray(v) for k, v in x._asdict().items()}  # noqa: E731
    nested = ("hyper", "context", "network", "hyper_zero_points", "network_zero_points")
    state = {k: np.asarray(v) for k, v in path._asdict().items() if k not in nested}
    state["hyper"] = {str(i): layer(x) for i, x in enumerate(path.hyper)}
    state["network"] = {str(i): layer(x) for i, x in enumerate(path.network)}
    state["context"] = layer(path.context)
    for name in nested[3:]:
        if getattr(path, name):  # absent from paths converted before zero points
            state[name] = {str(i): np.asarray(x) for i, x in enumerate(getattr(path, name))}
    return state


def from_state(state: dict[str, Any], config) -> IntegerPath:
    """The path of `to_state`'s dicts; ValueError if its structure or bounds do not fit `config`."""
    try:
        layer = lambda d: IntegerLayer(**{k: np.asarray(d[k]) for k in IntegerLayer._fields})  # noqa: E731
        listed = lambda d: tuple(np.asarray(d[str(i)]) for i in range(len(d)))  # noqa: E731
        path = IntegerPath(
            z_exponent=np.asarray(state["z_exponent"]), z_offset=np.asarray(state["z_offset"]),
            z_limit=np.asarray(state["z_limit"]),
            hyper=tuple(layer(state["hyper"][str(i)]) for i in range(len(state["hyper"]))),
            y_exponent=np.asarray(state["y_exponent"]), y_limit=np.asarray(state["y_limit"]),
            context=layer(state["context"]),
            network=tuple(layer(state["network"][str(i)]) for i in range(len(state["network"]))),
            hyper_zero_points=listed(state.get("hyper_zero_points", {})),
            network_zero_points=listed(state.get("network_zero_points", {})),
        )  # fmt: skip
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"damaged integer path ({type(e).__name__}: {e})") from None
    steps = config.transform_family.hyper_synthesis_steps
    expected_network = 3 if config.entropy_parameter_network else 0
    if (
        len(path.hyper) != len(steps)
        or len(path.network) != expected_network
        or path.z_offset.shape != (config.N,)
    ):
        raise ValueError(f"the integer path does not fit the model config {config}")
    check_bounds(path)
    return jax.device_put(path)


def digest(path: IntegerPath) -> str:
    """sha256 (hex) of every array of the path, in order: part of the model's fingerprint."""
    h = hashlib.sha256(b"mscm-jax integer path v1\0")
    for leaf in jax.tree.leaves(path):
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{array.dtype.str}|{array.shape}\0".encode())
        h.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def integer_fingerprint(float_fingerprint: str, path: IntegerPath) -> str:
    """The fingerprint of a model coded with its integer path: the float model's and the path's."""
    return hashlib.sha256(f"{float_fingerprint}|{digest(path)}".encode()).hexdigest()
