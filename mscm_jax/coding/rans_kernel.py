"""A segment's rANS decode loop as one Pallas kernel: the same bits as `rans.decode_segment`.

`rans.decode_segment` is an XLA while loop whose every step is a few dozen
operations; on a GPU each is a kernel launch, and a step cost about 16 us on
an H200 whatever the lane count (docs/status.md). Here the whole loop, with
the CDFs computed in it, is one kernel (Triton on a GPU): a step is the
arithmetic of its lanes, not launches. `decode_mixture_segment` decodes y's
stages (`integer_cdf.mixture_cdf`), `decode_table_segment` z
(`integer_cdf.table_cdf`).

The step is `rans`'s own (`rans._decode_step`) applied to what the kernel
loads: the models' rows one at a time and the tables as refs, so that every
array the kernel handles has a power-of-two size, as Triton requires (the
lanes are a power of two, and so are the search's rounds, `rans.SEARCH_WIDTHS`).
Escapes are branched around inside the kernel. Elsewhere than on a GPU it runs
in Pallas' interpret mode (slow: for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from mscm_jax.coding import integer_cdf, rans


def decode_mixture_segment(
    state: rans.DecoderState, words: jax.Array, models: jax.Array, count: jax.Array | int | None = None,
    num_warps: int | None = None,
) -> tuple[rans.DecoderState, jax.Array]:  # fmt: skip
    """`rans.decode_segment(state, words, models, integer_cdf.mixture_cdf, integer_cdf.half_widths, count)`.

    y's symbols: each column of `models` (2 + 3K, E) one element's mixture.
    One kernel on a GPU (Triton; `num_warps` warps, default `warps_for(lanes)`), Pallas'
    interpret mode on other backends.
    """

    def cdf(model, edge, tables):
        return integer_cdf.mixture_cdf(model, edge, integer_cdf.CdfTables(*tables))

    tables = tuple(map(jnp.asarray, integer_cdf.cdf_tables()))
    return _decode(state, words, models, count, tables, cdf, integer_cdf.half_widths, num_warps)


def decode_table_segment(
    state: rans.DecoderState, words: jax.Array, rows: jax.Array, cdfs: jax.Array,
    count: jax.Array | int | None = None, num_warps: int | None = None,
) -> tuple[rans.DecoderState, jax.Array]:  # fmt: skip
    """The same for symbols of fixed tables (z): symbol i's CDF is row `rows[0, i]` of `cdfs` (N, 2T + 2).

    `rans.decode_segment` with `integer_cdf.table_cdf`, every row's half-width T
    (`integer_cdf.table_half_width`).
    """
    half_width = integer_cdf.table_half_width(cdfs)

    def cdf(model, edge, tables):
        return integer_cdf.table_cdf(tables[0], jnp.broadcast_to(model[0], edge.shape), edge)

    def half_widths(model):
        return jnp.full(model[0].shape, half_width, jnp.int32)

    return _decode(state, words, rows, count, (cdfs,), cdf, half_widths, num_warps)


def warps_for(lanes: int) -> int:
    """A GPU kernel's warps for `lanes` lanes: one lane per thread, 1 to 8 warps.

    Compiled for an H200 (`experiments/kernel_compile.py`), the y kernel uses
    80 registers without spills at 32, 128 and 256 lanes so laid out; 256
    lanes on 4 warps (two lanes per thread) need all 255 and spill. Whether 32
    lanes step faster on one warp (no barriers) than on four (a quarter of the
    search per thread, 16 barriers) is `experiments/gpu_coding.py`'s to measure.
    """
    return min(max(lanes // 32, 1), 8)


def _decode(state, words, models, count, tables, cdf, half_widths, num_warps):
    """The segment's decode loop, `cdf(model rows, edges, table refs)`, as one kernel."""
    size, lanes = models.shape[1], state.x.shape[0]
    num_warps = num_warps or warps_for(lanes)
    steps = -(-size // lanes)
    if not steps:
        return state, jnp.zeros((0,), jnp.int32)
    count = jnp.asarray(size if count is None else count, jnp.int32).reshape(1)
    models = rans._padded(models, steps, lanes)
    operands = (state.x, state.position.reshape(1), count, words, models, *tables)
    call = functools.partial(
        _segment_call, steps=steps, lanes=lanes, cdf=cdf, half_widths=half_widths, num_warps=num_warps
    )
    on_gpu, elsewhere = functools.partial(call, interpret=False), functools.partial(call, interpret=True)
    x, position, out = jax.lax.platform_dependent(*operands, cuda=on_gpu, default=elsewhere)
    return rans.DecoderState(x, position[0]), out[:size]


def _segment_call(*operands, steps: int, lanes: int, cdf, half_widths, num_warps: int, interpret: bool):
    out_shape = (
        jax.ShapeDtypeStruct((lanes,), jnp.uint32),
        jax.ShapeDtypeStruct((1,), jnp.int32),
        jax.ShapeDtypeStruct((steps * lanes,), jnp.int32),
    )
    kernel = functools.partial(_decode_kernel, steps=steps, lanes=lanes, cdf=cdf, half_widths=half_widths)
    params = None if interpret else pltriton.CompilerParams(num_warps=num_warps)
    return pl.pallas_call(kernel, out_shape=out_shape, interpret=interpret, compiler_params=params)(*operands)


def _if_any_escape(escape, code, skip, operand):
    """Escapes branched around inside the kernel, as on a CPU: no host round trip here."""
    any_escape = jnp.max(escape.astype(jnp.int32)) > 0  # Triton has no reduce_or
    return jax.lax.cond(any_escape, code, skip, operand)


def _decode_kernel(x_ref, position_ref, count_ref, words_ref, models_ref, *refs, steps: int, lanes: int,
                   cdf, half_widths):  # fmt: skip
    """The loop of `rans.decode_segment` over `steps` steps of `lanes` symbols, in one program.

    `refs`: the tables `cdf` reads, then the outputs (lane states, stream position, symbols).
    """
    *tables, x_out_ref, position_out_ref, out_ref = refs
    count = count_ref[0]

    def step(i, state):
        start = i * lanes
        model = [models_ref[row, pl.ds(start, lanes)] for row in range(models_ref.shape[0])]
        active = start + jnp.arange(lanes) < count
        kernel_cdf = functools.partial(cdf, tables=tables)
        state, offsets = rans._decode_step(
            state, words_ref, model, active, kernel_cdf, half_widths, _if_any_escape
        )
        out_ref[pl.ds(start, lanes)] = offsets
        return state

    state = rans.DecoderState(x_ref[...], position_ref[0])
    state = jax.lax.fori_loop(0, steps, step, state)
    x_out_ref[...] = state.x
    position_out_ref[0] = state.position
