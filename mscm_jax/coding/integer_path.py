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
or int16 (`INT8_INPUTS`) and a power-of-two exponent `f[c]`; these scales are
folded into the next layer's weights, which are int8 with one power-of-two
scale per output channel: `W[i, o] = round(w[i, o] 2^-f[i] 2^e[o])`. The accumulator is int32
in 2^-e[o]; moving it to the next activation's 2^-f is a rounding shift, so
no layer needs a multiplier (`rescale`). Calibration (`convert`) picks
`f` from each channel's largest value on a few images, with one bit of headroom
for int16 activations and none for int8 ones (values beyond are clipped).

Which inputs are int8 is the speed-rate trade-off: an int8 input is one int8
product, an int16 one two (`ops.integer_dot`). The context's and the first
dense layer's inputs cost about nothing at 8 bits; the second and third dense
layers' inputs cost about 1 % of rate each, and the hyper-synthesis layers'
together 0.1-0.55 %, so they stay int16 (docs/format.md has the figures).
Which layers' inputs fit int8 follows from the stored clip limits
(`int8_inputs`), so model files need no new field.

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

WEIGHT_LIMIT = 127  # int8 weights
MAX_ACTIVATION_BITS = 15  # int16 activations
INT8_BITS, INT8_HEADROOM = 7, 1.0  # int8 activations: |a| <= 127, calibrated maxima use the whole range
INT8_INPUTS = ("context", "dense0")  # the layers whose inputs `convert` makes int8
ACCUMULATOR_BOUND = 1 << 30  # proven bound on |partial sums| (+ the rounding term: below 2^31)
OUTPUT_LIMIT = 1 << 24  # the last layer's outputs (means, scales, logits)
MAX_SHIFT = 30
LEAKY_SLOPE, LEAKY_BITS = 655, 16  # LeakyReLU slope 0.01 ~ 655 / 2^16
HEADROOM = 2.0  # calibrated maxima use half the range
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
    """

    z_exponent: jax.Array
    z_offset: jax.Array
    z_limit: jax.Array
    hyper: tuple[IntegerLayer, ...]
    y_exponent: jax.Array
    y_limit: jax.Array
    context: IntegerLayer
    network: tuple[IntegerLayer, ...]


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
    layers = [(f"hyper{i}", layer) for i, layer in enumerate(path.hyper)]
    limits = [int(path.z_limit)] + [int(layer.limit) for layer in path.hyper[:-1]]
    if path.network:
        layers.append(("context", path.context))
        limits.append(int(path.y_limit))
        layers += [(f"network{i}", layer) for i, layer in enumerate(path.network)]
        limits += [max(int(path.hyper[-1].limit), int(path.context.limit))]
        limits += [int(layer.limit) for layer in path.network[:-1]]
    return [(name, layer, limit) for (name, layer), limit in zip(layers, limits, strict=True)]


def int8_inputs(path: IntegerPath) -> Int8Inputs:
    """The layers of `path` (concrete) whose inputs are clipped to int8's range by the layer before."""
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


def leaky_relu(x: jax.Array) -> jax.Array:
    """Integer LeakyReLU, slope 655 / 2^16 (floor): |x| < 2^15 keeps the product below 2^25."""
    return jnp.where(x >= 0, x, (x * LEAKY_SLOPE) >> LEAKY_BITS)


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
    x: jax.Array, layer: IntegerLayer, step: LinearStep | None, activation: str | None, int8: bool = False
) -> jax.Array:
    """One integer layer: a convolution (`step`) or dense layer (None), rescaled, activated (int32).

    `int8`: the input is known to lie in int8's range (one product instead of two).
    """
    if int8:
        x = x.astype(jnp.int8)
    if step is None:
        acc = integer_dot(x, layer.weight)
    else:
        acc = integer_dot(_patches(x, step), layer.weight.reshape(-1, layer.weight.shape[-1]))
    out = rescale(acc + layer.bias, layer.shift, layer.limit)
    if step is not None and step.shuffle > 1:
        out = pixel_shuffle(out, step.shuffle)
    return leaky_relu(out) if activation == "leaky_relu" else out


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
    for step, layer, fits in zip(steps, path.hyper, narrow, strict=True):
        x = linear(x, layer, step, step.activation, fits)
    return x


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
            acc = stage_context(plan, kernel, stage, latent_input(path, y_hat, int8.context))
            weight_set = jnp.asarray(plan.weight_index)[stage]
            context = rescale(acc + path.context.bias[weight_set], path.context.shift[weight_set],
                              path.context.limit)  # fmt: skip
            context = jnp.where(kernel.context.any(), context, 0)
        else:  # no context weights (`hyperprior`)
            context = jnp.zeros((*features.shape[:-1], 2 * m), jnp.int32)
        x = jnp.concatenate([features, context], axis=-1)
        narrow = int8.network or (False,) * len(path.network)
        for i, (layer, fits) in enumerate(zip(path.network, narrow, strict=True)):
            x = linear(x, layer, None, "leaky_relu" if i < len(path.network) - 1 else None, fits)
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
    return bounds


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


def _input_exponents(
    peak: np.ndarray, limit: int, cap: int, floor: int = -MAX_SHIFT, headroom: float = HEADROOM
) -> np.ndarray:
    """Per channel, the largest exponent f <= cap with peak 2^f * headroom <= limit."""
    safe = np.maximum(np.asarray(peak, np.float64), 1e-30)
    f = np.floor(np.log2(limit / (headroom * safe)))
    return np.clip(np.where(peak > 0, f, cap), floor, cap).astype(np.int64)


def _fit_input(peak: np.ndarray, consumers: list, cap: int, floor: int = -MAX_SHIFT, int8: bool = False):
    """(exponents, limit, quantized consumers) of a tensor read by `consumers` [(w, b)].

    The widest activation range (int16, or int8 with `int8`, down) whose
    accumulator bound stays below 2^30.
    """
    top, headroom = (INT8_BITS, INT8_HEADROOM) if int8 else (MAX_ACTIVATION_BITS, HEADROOM)
    for bits in range(top, 3, -1):
        limit = (1 << bits) - 1
        exponent = _input_exponents(peak, limit, cap, floor, headroom)
        quantized = [_quantize_weights(w, b, exponent) for w, b in consumers]
        worst = max(_bound(q, limit) for q in quantized)
        if worst < ACCUMULATOR_BOUND:
            return exponent, limit, quantized
    raise ValueError("the integer path cannot bound this model's accumulators below 2^30 (weights too wide)")


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
    z_exponent, z_limit, (first,) = _fit_input(
        peaks["z"], [weights(p["h_s"], steps[0].name)], Z_MAX_EXPONENT, 0, int8="hyper" in INT8_INPUTS
    )
    median = np.asarray(model.apply(params, method=type(model).z_median), np.float64)
    z_offset = np.round(median * np.exp2(z_exponent)).astype(np.int32)
    hyper, pending = [], first
    for i, step in enumerate(steps[1:], 1):  # each step's output exponents are its consumer's input exponents
        exponent, limit, (q,) = _fit_input(
            peaks[f"hyper{i - 1}"], [weights(p["h_s"], step.name)], MAX_EXPONENT, int8="hyper" in INT8_INPUTS
        )
        hyper.append(_finish(pending, np.repeat(exponent, steps[i - 1].shuffle ** 2), limit))
        pending = q
    context_params = p.get("context", {})  # none without context weights and parameter network
    context_sets = np.asarray(context_params.get("context_kernel", np.zeros((0, 5, 5, m, 2 * m))))
    context_bias = context_params.get("context_bias")
    empty_context = IntegerLayer(np.zeros((0, 5, 5, m, 2 * m), np.int8), np.zeros((0, 2 * m), np.int32),
                                 np.zeros((0, 2 * m), np.int32), np.int32(0))  # fmt: skip
    if not config.entropy_parameter_network:
        hyper.append(_finish(pending, _head_exponents(2 * m, 1), OUTPUT_LIMIT))
        return _path(z_exponent, z_offset, z_limit, hyper, np.zeros(m, np.int32), 0, empty_context, [])

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
            int8="context" in INT8_INPUTS,
        )
    else:
        y_exponent, y_limit, sets = np.zeros(m, np.int64), 0, []
    # hyper features and context -> the first dense layer.
    inputs_peak = np.concatenate([peaks[f"hyper{len(steps) - 1}"], peaks["context"]])
    exponent, limit, (d0,) = _fit_input(inputs_peak, [dense[0]], MAX_EXPONENT, int8="dense0" in INT8_INPUTS)
    hyper.append(_finish(pending, exponent[: 2 * m], limit))
    context = empty_context
    if sets:
        layers = [_finish(q, exponent[2 * m :], limit) for q in sets]
        stacked = [np.stack([layer[i] for layer in layers]) for i in range(3)]
        context = IntegerLayer(*stacked, np.int32(limit))
    network, pending = [], d0
    for i in (1, 2):
        exponent, limit, (q,) = _fit_input(peaks[f"network{i - 1}"], [dense[i]], MAX_EXPONENT)
        network.append(_finish(pending, exponent, limit))
        pending = q
    network.append(_finish(pending, _head_exponents(dense[2][0].shape[-1], k), OUTPUT_LIMIT))
    return _path(z_exponent, z_offset, z_limit, hyper, y_exponent, y_limit, context, network)


def _path(z_exponent, z_offset, z_limit, hyper, y_exponent, y_limit, context, network) -> IntegerPath:
    path = IntegerPath(
        np.asarray(z_exponent, np.int32), np.asarray(z_offset, np.int32), np.int32(z_limit),
        tuple(hyper), np.asarray(y_exponent, np.int32), np.int32(y_limit), context, tuple(network),
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
    """Per-channel largest |value| of every tensor the integer path quantizes, over `images`."""
    from mscm_jax.model.compression_model import CompressionModel

    config = model.config
    steps = config.transform_family.hyper_synthesis_steps
    peak = lambda a: jnp.max(jnp.abs(a.reshape(-1, a.shape[-1])), axis=0)  # noqa: E731

    def statistics(params, x):
        y = model.apply(params, x, method=CompressionModel.analysis)
        z = model.apply(params, y, method=CompressionModel.hyper_analysis)
        median = model.apply(params, method=CompressionModel.z_median)
        z_hat = jnp.round(z - median) + median
        hyper_steps = float_hyper_synthesis(params, steps, z_hat)
        out = {"z": peak(z_hat), **{f"hyper{i}": peak(h) for i, h in enumerate(hyper_steps)}}
        if not config.entropy_parameter_network:
            return out
        hyper = hyper_steps[-1]
        y_hat = model.apply(params, y, hyper, method=CompressionModel.quantize_latent)
        context = model.apply(params, y_hat, method=CompressionModel.all_stage_contexts)
        inputs = jnp.concatenate([hyper, context], axis=-1)
        out["y"], out["context"] = peak(y_hat), peak(context)
        net = params["params"]["context"]["entropy_parameters"]
        x = inputs
        for i in range(3):
            x = x @ net[f"dense{i}"]["kernel"] + net[f"dense{i}"]["bias"]
            out[f"network{i}"] = peak(x)
            x = layers.leaky_relu(x)
        return out

    run = jax.jit(statistics)
    peaks: dict[str, np.ndarray] = {}
    for image in images:
        x = jnp.asarray(np.asarray(image, np.float32) / 255.0)[None]
        for name, value in run(params, x).items():
            peaks[name] = np.maximum(peaks.get(name, 0.0), np.asarray(value, np.float64))
    return peaks


# --------------------------------------------------------------------------
# Storage.
# --------------------------------------------------------------------------


def to_state(path: IntegerPath) -> dict[str, Any]:
    """Plain nested dicts of NumPy arrays (model files store them with MessagePack)."""
    layer = lambda x: {k: np.asarray(v) for k, v in x._asdict().items()}  # noqa: E731
    state = {k: np.asarray(v) for k, v in path._asdict().items() if k not in ("hyper", "context", "network")}
    state["hyper"] = {str(i): layer(x) for i, x in enumerate(path.hyper)}
    state["network"] = {str(i): layer(x) for i, x in enumerate(path.network)}
    state["context"] = layer(path.context)
    return state


def from_state(state: dict[str, Any], config) -> IntegerPath:
    """The path of `to_state`'s dicts; ValueError if its structure or bounds do not fit `config`."""
    try:
        layer = lambda d: IntegerLayer(**{k: np.asarray(d[k]) for k in IntegerLayer._fields})  # noqa: E731
        path = IntegerPath(
            z_exponent=np.asarray(state["z_exponent"]), z_offset=np.asarray(state["z_offset"]),
            z_limit=np.asarray(state["z_limit"]),
            hyper=tuple(layer(state["hyper"][str(i)]) for i in range(len(state["hyper"]))),
            y_exponent=np.asarray(state["y_exponent"]), y_limit=np.asarray(state["y_limit"]),
            context=layer(state["context"]),
            network=tuple(layer(state["network"][str(i)]) for i in range(len(state["network"]))),
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
