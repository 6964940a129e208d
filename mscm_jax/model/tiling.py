"""The analysis and synthesis transforms run tile by tile, so that a large image needs one tile's memory.

Both transforms are convolutional: an element of y depends only on the pixels
within a fixed reach of it, and a pixel only on the elements of y within a
fixed reach (`TransformFamily.analysis_reach`, `synthesis_reach`, counted in
elements of y). A window that extends that reach beyond a core region on every
side, or up to the edge of the image, computes the core as the whole transform
does, up to float rounding. All windows have one shape: one compiled body runs
in a loop over the tiles, and the memory of the intermediate activations is
one window's (docs/usage.md has figures). Windows overlap by twice the reach:
the price is that much more computation, so an image is cut into the windows
that fit a budget of pixels and compute the least (`plan_tiles`), and an
image within the budget runs whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# Pixels per window: a 3840x2160 image runs whole, a 4000x3000 photo in two windows.
DEFAULT_TILE_PIXELS = 2**23
MIN_TILE_PIXELS = 4096  # a 64 x 64 window, 4 x 4 elements of y
_MAX_TILES_PER_AXIS = 64


def valid_tile_pixels(pixels: object) -> bool:
    """Whether `pixels` is a window budget: an integer, 0 (whole images) or at least MIN_TILE_PIXELS."""
    is_integer = isinstance(pixels, (int, np.integer)) and not isinstance(pixels, bool)
    return is_integer and bool(pixels == 0 or pixels >= MIN_TILE_PIXELS)


@dataclasses.dataclass(frozen=True)
class AxisTiles:
    """The tiles along one axis, in elements of y: `len(cores)` windows of `window` elements; window i
    starts at `windows[i]` and contributes the `core` elements from `cores[i]` on."""

    size: int
    window: int
    core: int
    cores: tuple[int, ...]
    windows: tuple[int, ...]


def axis_tiles(size: int, count: int, reach: int, multiple: int = 1) -> AxisTiles:
    """`size` elements in `count` cores, each window `reach` beyond its core or at an edge; window
    sizes a multiple of `multiple`. One window, the whole axis, where a window would not be smaller."""
    core = -(-size // count)
    window = -(-(core + 2 * reach) // multiple) * multiple
    if count <= 1 or window >= size:
        return AxisTiles(size, size, size, (0,), (0,))
    # The last core may overlap the one before it: both compute the same values, so cores stay one size.
    cores = tuple(min(i * core, size - core) for i in range(-(-size // core)))
    windows = tuple(min(max(c - reach, 0), size - window) for c in cores)
    return AxisTiles(size, window, core, cores, windows)


def plan_tiles(
    height: int, width: int, max_window: int, reach: int, multiple: int = 1
) -> tuple[AxisTiles, AxisTiles]:
    """Row and column tiles of a height x width latent whose windows hold at most `max_window`
    elements (0: no limit), computing the least in all; where none fit, the smallest windows of at
    most 64 tiles an axis."""
    whole = axis_tiles(height, 1, reach), axis_tiles(width, 1, reach)
    if max_window <= 0 or height * width <= max_window:
        return whole
    rows = [axis_tiles(height, n, reach, multiple) for n in range(1, min(height, _MAX_TILES_PER_AXIS) + 1)]
    cols = [axis_tiles(width, n, reach, multiple) for n in range(1, min(width, _MAX_TILES_PER_AXIS) + 1)]

    def cost(plan: tuple[AxisTiles, AxisTiles]) -> tuple[bool, int, int]:
        r, c = plan
        window = r.window * c.window
        fits = window <= max_window
        return not fits, window * len(r.cores) * len(c.cores) if fits else window, len(r.cores) * len(c.cores)

    return min(((r, c) for r in rows for c in cols), key=cost)


def map_tiles(
    transform: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    rows: AxisTiles,
    cols: AxisTiles,
    scale_in: int,
    scale_out: int,
) -> jax.Array:
    """`transform` of x (1, H, W, C), computed window by window.

    `rows` and `cols` count elements of y; an element of y is `scale_in`
    pixels of x and `scale_out` pixels of the result along each axis (the
    synthesis: 1 and the latent stride; the analysis: the other way round).
    """
    if len(rows.cores) == 1 and len(cols.cores) == 1:
        return transform(x)
    window_shape = (1, rows.window * scale_in, cols.window * scale_in, x.shape[3])
    out = jax.eval_shape(transform, jax.ShapeDtypeStruct(window_shape, x.dtype))
    core_shape = (1, rows.core * scale_out, cols.core * scale_out, out.shape[3])
    # Each tile: where its window starts and where its core starts within the window and in the result.
    tiles = jnp.asarray(
        [(wr, wc, cr - wr, cc - wc, cr, cc)
         for wr, cr in zip(rows.windows, rows.cores, strict=True)
         for wc, cc in zip(cols.windows, cols.cores, strict=True)],
        jnp.int32,
    )  # fmt: skip
    zero = jnp.int32(0)

    def tile(i, result):
        wr, wc, r, c, cr, cc = (tiles[i, k] for k in range(6))
        window = jax.lax.dynamic_slice(x, (zero, wr * scale_in, wc * scale_in, zero), window_shape)
        out_start = (zero, r * scale_out, c * scale_out, zero)
        core = jax.lax.dynamic_slice(transform(window), out_start, core_shape)
        return jax.lax.dynamic_update_slice(result, core, (zero, cr * scale_out, cc * scale_out, zero))

    result = jnp.zeros((1, rows.size * scale_out, cols.size * scale_out, out.shape[3]), out.dtype)
    return jax.lax.fori_loop(0, tiles.shape[0], tile, result)
