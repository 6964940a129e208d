"""Stage-masked spatial context and the entropy-parameter network.

Lin et al., "Multistage Spatial Context Models for Learned Image
Compression", ICASSP 2023, arXiv:2302.09263, Sec. 2.2-2.3.

One function, `stage_network_inputs`, computes the entropy-parameter network's
input for the elements of **one** stage only: for every in-patch position of
the stage it reads the 25 window taps of all patches at once (rows
`r0 + n u + dy`: strided reads, a gather at a traced offset or, in a
decoder's stage program, slices at constant offsets), zeroes the taps
that are not context (the position's mask from `Schedule.context_kernel_mask`),
and contracts them with the stage's 5x5 weights in one matrix product. Its cost
is `1 / n^2` of a full-resolution pass per position, and the stage index is a
traced value, so one compilation serves every stage.

- Decoding (and encoding) call it once per stage (`MultistageContext.decode_stage`)
  with the stage's own taps only; the stage program then switches on the
  stage, and each branch reads its taps by strided slices at constant offsets
  (`MAX_STAGE_BRANCHES`).
- Training calls it for all stages at once through `jax.vmap` over the stage
  index (`MultistageContext.all_stages`), so the likelihoods it trains are
  those the coder will use.
- `serial` is the same function on a plan with one position per stage; only
  its training pass is a causal masked convolution over the whole latent,
  since vmapping H*W single-element stages would be slow and equal.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.model.layers import leaky_relu, torch_default_init
from mscm_jax.model.ops import integer_dot
from mscm_jax.model.schedules import Schedule, StagePlan


@functools.lru_cache(maxsize=64)
def cached_stage_plan(schedule: Schedule, latent_h: int, latent_w: int) -> StagePlan:
    return schedule.stage_plan(latent_h, latent_w)


class StageKernel(NamedTuple):
    """One stage's context weights at the window taps it reads: the one kernel form.

    kernel: (t, M, D) the weights of those taps; taps: (t,) their indices in
    the row-major k x k window; context: (P, t) whether tap i is context for
    entry p (taps another entry of the stage needs are not).

    A decoder builds the smallest ones once (`MultistageContext.stage_kernels`:
    only the taps of `stage_taps`); training and tests take the whole window
    (`of_window`, `of_stage`), which gives the same result with more work.
    """

    kernel: jax.Array
    taps: jax.Array
    context: jax.Array

    @classmethod
    def of_window(cls, plan: StagePlan, kernel: jax.Array, stage: jax.Array) -> StageKernel:
        """The whole k x k window's weights (k, k, M, D), masked by stage `stage`'s `plan.tap_mask`.

        `stage` may be traced (as under `jax.vmap` over the stages).
        """
        window = plan.tap_mask.shape[-1]
        return cls(
            kernel.reshape(window, *kernel.shape[2:]), jnp.arange(window), jnp.asarray(plan.tap_mask)[stage]
        )

    @classmethod
    def of_stage(cls, plan: StagePlan, kernels: jax.Array, stage: jax.Array) -> StageKernel:
        """Stage `stage`'s set (`plan.weight_index`) of all the sets (num_sets, k, k, M, D), as `of_window`.

        No sets (`hyperprior`) give a kernel of no taps.
        """
        if kernels.shape[0] == 0:
            m, d = kernels.shape[-2:]
            no_taps = jnp.zeros((plan.max_positions, 0), bool)
            return cls(jnp.zeros((0, m, d), kernels.dtype), jnp.zeros((0,), jnp.int32), no_taps)
        return cls.of_window(plan, kernels[jnp.asarray(plan.weight_index)[stage]], stage)


jax.export.register_namedtuple_serialization(
    StageKernel, serialized_name="mscm_jax.model.context.StageKernel"
)


def stage_taps(plan: StagePlan, stage: int) -> tuple[np.ndarray, np.ndarray]:
    """The window taps stage `stage` reads: indices (t,) and their (P, t) context mask.

    Exactly the taps that are context for at least one of the stage's entries,
    so a decoder multiplies no tap by zero: about half the window on average,
    since each pair of neighbours is context once, for the later of the two.
    """
    mask = plan.tap_mask[stage] & plan.valid[stage][:, None]  # (P, k*k)
    taps = np.flatnonzero(mask.any(axis=0)).astype(np.int32)
    return taps, mask[:, taps]


def stage_tap_counts(plan: StagePlan) -> np.ndarray:
    """(S,) the number of window taps each stage reads (`stage_taps`), of any of its entries."""
    return (plan.tap_mask & plan.valid[:, :, None]).any(axis=1).sum(axis=1)


# --------------------------------------------------------------------------
# Strided (polyphase) reads and writes: at traced offsets, and at constant ones (`_strided_window`).
# --------------------------------------------------------------------------


def _stage_indices(plan: StagePlan, stage: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Latent rows (P, h) and columns (P, w) of stage `stage`'s elements.

    Element (u, v) of entry p sits at row `positions[p, 0] + n u`, column
    `positions[p, 1] + n v`: one rule for reading taps, parameters and symbols.
    """
    positions = jnp.asarray(plan.positions)[stage]
    (h, w), n = plan.grid, plan.stride
    rows = positions[:, 0, None] + n * jnp.arange(h)
    cols = positions[:, 1, None] + n * jnp.arange(w)
    return rows, cols


def _pad_for_stages(x: jax.Array, plan: StagePlan, margin: int = 0) -> jax.Array:
    """Zero-pads (B, H, W, C) by `margin` before and enough after for every stage's reads.

    Zeros stand for what lies outside the image, and for the positions beyond
    the latent when the patch size does not divide it.
    """
    (h, w), n, k = plan.grid, plan.stride, 2 * margin + 1
    rows = int(plan.positions[..., 0].max()) + n * (h - 1) + k
    cols = int(plan.positions[..., 1].max()) + n * (w - 1) + k
    after_r = max(rows - x.shape[1] - margin, margin)
    after_c = max(cols - x.shape[2] - margin, margin)
    return jnp.pad(x, ((0, 0), (margin, after_r), (margin, after_c), (0, 0)))


def _strided_window(x: jax.Array, row: int, col: int, n: int, size: tuple[int, int]) -> jax.Array:
    """(B, h, w, C): rows `row + n u`, columns `col + n v` of `x` (B, H, W, C), zeros outside it.

    Constant offsets: a strided slice of what lies inside, padded, which XLA
    fuses into its consumer (no padded copy of `x`).
    """

    def span(start: int, count: int, length: int) -> tuple[slice, tuple[int, int]]:
        first = max(0, -(start // n))  # the first index u inside, and one past the last
        last = min(count, (length - 1 - start) // n + 1)
        if last <= first:
            return slice(0, 0), (count, 0)
        return slice(start + n * first, start + n * (last - 1) + 1, n), (first, count - last)

    (rows, pad_r), (cols, pad_c) = span(row, size[0], x.shape[1]), span(col, size[1], x.shape[2])
    inside = x[:, rows, cols]
    return jnp.pad(inside, ((0, 0), pad_r, pad_c, (0, 0)))


def read_stage(plan: StagePlan, x: jax.Array, stage: jax.Array) -> jax.Array:
    """The values of `x` (B, H, W, C) at stage `stage`'s elements: (P, B, h, w, C).

    Entries beyond the latent read zeros; entries of padding positions
    (`plan.valid` False) read something and must be ignored. Reads are strided
    slices of a polyphase view (B, H/n, n, W/n, n, C) at a traced phase: on
    CPU several times cheaper than a gather for the 2M hyper channels.
    """
    n, (h, w) = plan.stride, plan.grid
    padded = _pad_for_stages(x, plan)
    b, rows, cols, c = padded.shape
    extra_r, extra_c = -rows % n, -cols % n
    padded = jnp.pad(padded, ((0, 0), (0, extra_r), (0, extra_c), (0, 0)))
    phases = padded.reshape(b, (rows + extra_r) // n, n, (cols + extra_c) // n, n, c)
    positions = jnp.asarray(plan.positions)[stage]
    out = []
    for p in range(plan.max_positions):
        r0, c0 = positions[p, 0], positions[p, 1]
        start = (0, r0 // n, r0 % n, c0 // n, c0 % n, 0)
        out.append(jax.lax.dynamic_slice(phases, start, (b, h, 1, w, 1, c)).reshape(b, h, w, c))
    return jnp.stack(out)


def write_stage(plan: StagePlan, x: jax.Array, stage: jax.Array, values: jax.Array) -> jax.Array:
    """`x` (B, H, W, C) with stage `stage`'s elements replaced by `values` (P, B, h, w, C)."""
    rows, cols = _stage_indices(plan, stage)
    valid = jnp.asarray(plan.valid)[stage]
    # Padding entries and elements beyond the latent are sent out of bounds and dropped.
    far = x.shape[1] + x.shape[2] + plan.stride * (plan.grid[0] + plan.grid[1]) + 1
    rows = jnp.where(valid[:, None], rows, far)
    values = jnp.moveaxis(values, 0, 1).astype(x.dtype)  # (B, P, h, w, C)
    return x.at[:, rows[:, :, None], cols[:, None, :]].set(values, mode="drop")


def scatter_all_stages(plan: StagePlan, per_stage: jax.Array) -> jax.Array:
    """(S, P, B, h, w, D) values of every stage -> (B, H, W, D) latent layout."""
    if plan.stride == 1 and plan.grid == (1, 1):
        s_b_d = per_stage[:, 0, :, 0, 0]  # serial: one element per stage, raster order.
        b, d = s_b_d.shape[1:]
        return s_b_d.transpose(1, 0, 2).reshape(b, *plan.latent_shape, d)
    n = plan.stride
    stage_of = np.zeros((n, n), np.int32)
    entry_of = np.zeros((n, n), np.int32)
    for s in range(plan.num_stages):
        for p in range(plan.max_positions):
            if plan.valid[s, p]:
                stage_of[tuple(plan.positions[s, p])] = s
                entry_of[tuple(plan.positions[s, p])] = p
    x = per_stage[stage_of, entry_of]  # (n, n, B, h, w, D)
    b, h, w, d = x.shape[2:]
    x = x.transpose(2, 3, 0, 4, 1, 5).reshape(b, n * h, n * w, d)
    return x[:, : plan.latent_shape[0], : plan.latent_shape[1]]


# --------------------------------------------------------------------------
# The stage function.
# --------------------------------------------------------------------------


# A decoder's stage program gives each stage its own branch, with its taps and positions as
# constants, up to this many stages; more (`serial` has H*W) share a branch per tap count.
MAX_STAGE_BRANCHES = 16


def stage_context(
    plan: StagePlan,
    kernel: StageKernel,
    stage: jax.Array,
    y_hat: jax.Array,
    bias: jax.Array | None = None,
    own_taps: bool = False,
) -> jax.Array:
    """Context features of stage `stage`'s elements: (P, B, h, w, D).

    Args:
      plan: static tables of the schedule on this latent size.
      kernel: the stage's context weights (cross-correlation, as PyTorch's
        `conv2d`) at the taps it reads. The caller picks the stage's set
        (`StageKernel.of_stage`), so a decoder can split the sets once up front.
      stage: scalar int, may be traced.
      y_hat: (B, H, W, M) latent; elements of stage >= `stage` may hold
        anything (they are masked out, not multiplied by zero, so even NaN
        placeholders cannot leak). Integer latents with integer weights give
        int32 sums.
      bias: optional (D,) added where the stage has context (CompressAI's
        serial `MaskedConv2d` has one; the MSCM authors' convolutions do not).
      own_taps: `kernel` is a decoder's (`CompressionModel.stage_kernels`):
        exactly stage `stage`'s taps (`stage_taps`), padded to one tap count
        for every stage, so one program serves every stage. It multiplies no
        padding: a `lax.switch` with one branch per stage, each reading its
        taps by constant strided slices (at most `MAX_STAGE_BRANCHES` stages),
        or one branch per tap count (`stage_tap_counts`). False multiplies
        every tap of `kernel` (training, under `jax.vmap`, where a switch would
        run all its branches).
    """
    k = math.isqrt(plan.tap_mask.shape[-1])
    taps, d = kernel.kernel.shape[0], kernel.kernel.shape[-1]
    # Integer inputs (the integer path, `integer_path`) accumulate exactly in int32.
    integer = jnp.issubdtype(y_hat.dtype, jnp.integer)
    out_dtype = jnp.int32 if integer else y_hat.dtype
    b, m = y_hat.shape[0], y_hat.shape[-1]
    (h, w), p_max, n = plan.grid, plan.max_positions, plan.stride

    def product(values):
        """(B, P, h, w, t, M) tap values, zero where not context -> the context features."""
        t = values.shape[-2]
        # One plain (rows, t M) x (t M, D) product: an einsum to (P, B, ...) made XLA transpose
        # the taps and the product, 1.4x this context's time on a 4x4 stage (2-core CPU).
        values = jnp.moveaxis(values, 1, 0).reshape(p_max * b * h * w, t * m)
        weights = kernel.kernel[:t].reshape(t * m, d)
        weights = weights.astype(kernel.kernel.dtype if integer else values.dtype)
        if integer:
            out = integer_dot(values, weights)
        else:
            out = jnp.dot(values, weights, preferred_element_type=out_dtype)
        out = out.reshape(p_max, b, h, w, d)
        if bias is not None:
            out = out + bias.astype(out.dtype)
        return out.astype(out_dtype)

    def gathered(y_hat, taps: int = taps):
        """The first `taps` taps of `kernel` at the traced stage: one gather."""
        # Window tap (dy, dx) of element (u, v) sits at padded row r0 + n u + dy.
        padded = _pad_for_stages(y_hat, plan, k // 2)
        rows, cols = _stage_indices(plan, stage)
        taps_r = rows[:, :, None] + kernel.taps[:taps] // k  # (P, h, t)
        taps_c = cols[:, :, None] + kernel.taps[:taps] % k  # (P, w, t)
        values = padded[:, taps_r[:, :, None, :], taps_c[:, None, :, :]]  # (B, P, h, w, t, M)
        is_context = kernel.context[:, :taps].reshape(1, p_max, 1, 1, taps, 1)
        return product(jnp.where(is_context, values, jnp.zeros((), values.dtype)))

    def of_stage(y_hat, s: int):
        """Stage `s`'s taps (`stage_taps`, the order of its kernel) by constant strided slices:
        4x4's 16 context products alone 1.5x faster than by the gather on a 2-core CPU, and
        compiled as fast."""
        tap_indices, is_context = stage_taps(plan, s)
        if not len(tap_indices):
            return no_context(y_hat)
        zeros = jnp.zeros((b, h, w, m), y_hat.dtype)

        def tap(p, i):
            (r0, c0), (dy, dx) = plan.positions[s, p], divmod(int(tap_indices[i]), k)
            if not is_context[p, i]:
                return zeros
            return _strided_window(y_hat, r0 + dy - k // 2, c0 + dx - k // 2, n, (h, w))

        entries = [jnp.stack([tap(p, i) for i in range(len(tap_indices))], -2) for p in range(p_max)]
        return product(jnp.stack(entries, 1))

    def no_context(y_hat):
        return jnp.zeros((p_max, b, h, w, d), out_dtype)

    if taps == 0:  # a decoder's stage without context reads nothing
        return no_context(y_hat)
    if not own_taps:
        # Stage 0 (and any stage without earlier neighbours) skips the work.
        return jax.lax.cond(kernel.context.any(), gathered, no_context, y_hat)
    if plan.num_stages <= MAX_STAGE_BRANCHES:
        branches = [functools.partial(of_stage, s=s) for s in range(plan.num_stages)]
        return jax.lax.switch(stage, branches, y_hat)
    # One branch per tap count, the smallest that covers the stage's last context tap (0: none).
    used = jnp.max(jnp.where(kernel.context.any(axis=0), jnp.arange(1, taps + 1), 0))
    sizes = sorted({0, taps, *(int(c) for c in stage_tap_counts(plan) if c <= taps)})
    branches = [functools.partial(gathered, taps=size) if size else no_context for size in sizes]
    return jax.lax.switch(jnp.searchsorted(jnp.asarray(sizes), used), branches, y_hat)


def stage_network_inputs(
    plan: StagePlan,
    kernel: StageKernel,
    stage: jax.Array,
    y_hat: jax.Array,
    hyper: jax.Array,
    bias: jax.Array | None = None,
    own_taps: bool = False,
) -> jax.Array:
    """Input of the entropy-parameter network at stage `stage`: (P, B, h, w, 4M).

    The hyperprior features (2M) of the stage's elements followed by their
    context (2M; zeros at stage 0), the order of Minnen 2018 and the MSCM code.
    `kernel`, `bias` and `own_taps` are as `stage_context` takes them.
    """
    context = stage_context(plan, kernel, stage, y_hat, bias, own_taps)
    return jnp.concatenate([read_stage(plan, hyper, stage), context.astype(hyper.dtype)], axis=-1)


def _stage_bias(plan: StagePlan, biases: jax.Array | None, stage: jax.Array) -> jax.Array | None:
    """Stage `stage`'s context bias (D,) of the per-set biases (num_sets, D); None if there are none."""
    if biases is None or not biases.size:
        return None
    return biases[jnp.asarray(plan.weight_index)[stage]]


class EntropyParameters(nn.Module):
    """Three 1x1 convolutions (4M -> 10M/3 -> 8M/3 -> out), shared by all stages.

    Minnen 2018, Fig. 4; widths use integer division as CompressAI does.
    """

    latent_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        m = self.latent_channels
        x = leaky_relu(nn.Dense(m * 10 // 3, kernel_init=torch_default_init, name="dense0")(x))
        x = leaky_relu(nn.Dense(m * 8 // 3, kernel_init=torch_default_init, name="dense1")(x))
        return nn.Dense(self.out_channels, kernel_init=torch_default_init, name="dense2")(x)


class MultistageContext(nn.Module):
    """Per-stage 5x5 context convolutions + the shared entropy-parameter network.

    Parameters: `context_kernel` (S - 1, 5, 5, M, 2M), no bias (the MSCM
    authors' `gcm.{s}` without the unused stage-0 one; serial: one set; none
    for `hyperprior`), and `entropy_parameters`.

    Options for imported CompressAI models (defaults: the MSCM model):
      use_context_bias: a `context_bias` (S - 1, 2M) per weight set, added where
        a stage has context (CompressAI's serial `context_prediction` has one).
      use_parameter_network: False makes the hyperprior features themselves the
        entropy parameters (CompressAI's `mbt2018-mean`, Minnen 2018's
        mean-scale hyperprior without context; only with `hyperprior`).
    """

    schedule: Schedule
    latent_channels: int
    out_channels: int
    use_context_bias: bool = False
    use_parameter_network: bool = True

    def setup(self):
        k = self.schedule.kernel_size
        m = self.latent_channels
        sets = self.schedule.num_context_weight_sets
        # PyTorch's default conv init, fan_in = k * k * M.
        bound = 1.0 / (k * k * m) ** 0.5
        if sets == 0:
            # `hyperprior` has no context weights: empty constants, not parameters
            # (checkpointing cannot store zero-size arrays).
            self.context_kernel = jnp.zeros((0, k, k, m, 2 * m), jnp.float32)
            self.context_bias = jnp.zeros((0, 2 * m), jnp.float32) if self.use_context_bias else None
        else:
            self.context_kernel = self.param(
                "context_kernel",
                lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
                (sets, k, k, m, 2 * m),
            )
            self.context_bias = None
            if self.use_context_bias:
                self.context_bias = self.param("context_bias", nn.initializers.zeros, (sets, 2 * m))
        self.entropy_parameters = None
        if self.use_parameter_network:
            self.entropy_parameters = EntropyParameters(m, self.out_channels)

    def parameter_network(self, inputs: jax.Array) -> jax.Array:
        """Network inputs (hyper 2M, context 2M) -> raw entropy parameters."""
        if self.entropy_parameters is None:
            return inputs[..., : 2 * self.latent_channels]
        return self.entropy_parameters(inputs)

    def plan(self, latent_h: int, latent_w: int) -> StagePlan:
        return cached_stage_plan(self.schedule, latent_h, latent_w)

    def decode_stage(
        self, stage: jax.Array, y_hat: jax.Array, hyper: jax.Array, stage_kernel: StageKernel | None = None
    ) -> jax.Array:
        """Raw entropy parameters of stage `stage`'s elements: (P, B, h, w, out).

        `stage_kernel`, when given, replaces the stage's slice of
        `context_kernel`: a decoder that splits the sets once (`stage_kernels`)
        saves copying them out of the stack at every stage, and multiplies only
        the stage's context taps.
        """
        plan = self.plan(*y_hat.shape[1:3])
        own_taps = stage_kernel is not None
        if stage_kernel is None:
            stage_kernel = StageKernel.of_stage(plan, self.context_kernel, stage)
        bias = _stage_bias(plan, self.context_bias, stage)
        inputs = stage_network_inputs(plan, stage_kernel, stage, y_hat, hyper, bias, own_taps)
        return self.parameter_network(inputs)

    def stage_kernels(self, latent_h: int, latent_w: int) -> list[StageKernel]:
        """Each stage's `StageKernel`: its context weights at the taps it reads (`stage_taps`).

        Padded at the end, with zero weights at taps that are context for no
        entry, to the largest tap count of any stage: one compiled stage
        program serves every stage, and `decode_stage` multiplies a stage's
        taps only up to its last one, so the padding costs no products. Stages
        with the same weight set and taps share one (`serial`'s H*W stages share one).
        """
        plan = self.plan(latent_h, latent_w)
        m, d = self.context_kernel.shape[-2:]
        window = plan.tap_mask.shape[-1]
        per_stage = [stage_taps(plan, s) for s in range(plan.num_stages)]
        width = max(len(taps) for taps, _ in per_stage)
        shared, out = {}, []
        for s, (taps, context) in enumerate(per_stage):
            weight_set = int(plan.weight_index[s]) if plan.num_weight_sets else -1
            key = (weight_set, taps.tobytes(), context.tobytes())
            if key not in shared:
                if weight_set < 0:  # no context weights (`hyperprior`): no taps either
                    kernel = jnp.zeros((len(taps), m, d), self.context_kernel.dtype)
                else:
                    kernel = self.context_kernel[weight_set].reshape(window, m, d)[taps]
                extra = width - len(taps)
                shared[key] = StageKernel(
                    jnp.pad(kernel, ((0, extra), (0, 0), (0, 0))),
                    jnp.asarray(np.pad(taps, (0, extra))),
                    jnp.asarray(np.pad(context, ((0, 0), (0, extra)))),
                )
            out.append(shared[key])
        return out

    def all_stages(self, y_hat: jax.Array, hyper: jax.Array) -> jax.Array:
        """Raw entropy parameters of every latent element: (B, H, W, out).

        Each element sees exactly the context it has when its stage is decoded.
        """
        plan = self.plan(*y_hat.shape[1:3])
        if self.schedule.is_serial:
            inputs = jnp.concatenate([hyper, self._serial_context(y_hat).astype(hyper.dtype)], -1)
            return self.parameter_network(inputs)
        kernels, biases = self.context_kernel, self.context_bias

        def stage_inputs(stage):
            kernel = StageKernel.of_stage(plan, kernels, stage)
            return stage_network_inputs(plan, kernel, stage, y_hat, hyper, _stage_bias(plan, biases, stage))

        inputs = jax.vmap(stage_inputs)(jnp.arange(plan.num_stages))
        return scatter_all_stages(plan, self.parameter_network(inputs))

    def all_contexts(self, y_hat: jax.Array) -> jax.Array:
        """Every element's context features (B, H, W, 2M), as its stage sees them (zeros without context)."""
        plan = self.plan(*y_hat.shape[1:3])
        if self.schedule.is_serial:
            return self._serial_context(y_hat)
        kernels, biases = self.context_kernel, self.context_bias

        def stage_features(stage):
            kernel = StageKernel.of_stage(plan, kernels, stage)
            return stage_context(plan, kernel, stage, y_hat, _stage_bias(plan, biases, stage))

        return scatter_all_stages(plan, jax.vmap(stage_features)(jnp.arange(plan.num_stages)))

    def _serial_context(self, y_hat: jax.Array) -> jax.Array:
        """Causal 5x5 masked convolution over the whole latent (Minnen 2018)."""
        mask = self.schedule.context_kernel_mask()[0, 0]
        kernel = self.context_kernel[0] * jnp.asarray(mask, self.context_kernel.dtype)[:, :, None, None]
        half = mask.shape[0] // 2
        out = jax.lax.conv_general_dilated(
            y_hat,
            kernel,
            (1, 1),
            ((half, half), (half, half)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return out if self.context_bias is None else out + self.context_bias[0]
