"""Tiled transforms: the tiles cover the latent with each window its reach beyond its core, each
family's reach is what its transforms have, and the transforms in tiles equal them whole."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.model.compression_model import CompressionModel, ModelConfig, init_model
from mscm_jax.model.ops import pad_to_multiple
from mscm_jax.model.tiling import DEFAULT_TILE_PIXELS, axis_tiles, map_tiles, plan_tiles
from mscm_jax.model.transforms import TRANSFORMS


def test_tiles_cover_the_axis_and_each_window_reaches_beyond_its_core():
    for size, count, reach, multiple in itertools.product(range(1, 41), (1, 2, 3, 7, 40), (0, 2, 5), (1, 4)):
        tiles = axis_tiles(size, count, reach, multiple)
        covered = np.zeros(size, bool)
        for core, window in zip(tiles.cores, tiles.windows, strict=True):
            assert 0 <= window <= core and core + tiles.core <= window + tiles.window <= size
            assert core - window >= reach or window == 0, (size, count, reach, multiple)
            assert window + tiles.window - (core + tiles.core) >= reach or window + tiles.window == size
            covered[core : core + tiles.core] = True
        assert covered.all() and tiles.size == size
        assert tiles.window % multiple == 0 or tiles.window == size
        if len(tiles.cores) == 1:
            assert tiles.window == tiles.core == size
        else:
            assert len(tiles.cores) <= count and tiles.core == -(-size // count) and tiles.window < size


def test_the_plan_computes_least_with_windows_that_fit():
    budget = DEFAULT_TILE_PIXELS // 16**2  # elements of y
    rows, cols = plan_tiles(136, 240, budget, 11)  # 3840x2160 (y padded to 136 rows): whole
    assert rows.cores == cols.cores == (0,) and rows.window == 136 and cols.window == 240
    # 4000x3000 (188 x 250): two columns of 125 + 2 x 11 computes less than two rows (116 x 250),
    # three columns or 2 x 2; three columns would have smaller windows.
    rows, cols = plan_tiles(188, 250, budget, 11)
    assert (len(rows.cores), len(cols.cores), rows.window, cols.window) == (1, 2, 188, 147)
    rows, cols = plan_tiles(188, 250, 5000, 11)
    assert rows.window * cols.window <= 5000 and len(rows.cores) * len(cols.cores) > 6
    smallest = axis_tiles(188, 64, 11).window, axis_tiles(250, 64, 11).window  # 64 tiles an axis at most
    for budget in (1, 500):  # none fit
        rows, cols = plan_tiles(188, 250, budget, 11)
        assert (rows.window, cols.window) == smallest
    whole = plan_tiles(188, 250, 0, 11)
    assert whole[0].window == 188 and whole[1].window == 250


@pytest.fixture(scope="module", params=sorted(TRANSFORMS))
def family_model(request):
    config = ModelConfig(transform=request.param, N=8, M=8, num_mixtures=1, schedule="checkerboard")
    model, params = init_model(config, jax.random.PRNGKey(0))
    return TRANSFORMS[request.param], model, params


def test_each_family_reaches_as_far_as_it_says(family_model):
    """The pixels one element of y depends on (analysis), and the pixels it changes (synthesis),
    measured by differentiation, span the family's reach on each side, not more."""
    family, model, params = family_model
    size, stride, centre = 32, family.latent_stride, 16

    def rows_touched(values):  # element rows (in elements of y) of the nonzero rows of an image
        rows = np.nonzero(np.abs(np.asarray(values[0])).max(axis=(1, 2)) > 0)[0]
        return centre - rows.min() // stride, (rows.max() // stride) - centre

    y = jax.random.normal(jax.random.PRNGKey(1), (1, size, size, 8))
    synthesis = lambda y: model.apply(params, y, (stride * size,) * 2, method=CompressionModel.synthesis)  # noqa: E731
    _, change = jax.jvp(synthesis, (y,), (jnp.zeros_like(y).at[0, centre, centre].set(1.0),))
    assert max(rows_touched(change)) == family.synthesis_reach

    x = jax.random.uniform(jax.random.PRNGKey(2), (1, stride * size, stride * size, 3))
    y, pullback = jax.vjp(lambda x: model.apply(params, x, method=CompressionModel.analysis), x)
    (gradient,) = pullback(jnp.zeros_like(y).at[0, centre, centre].set(1.0))
    assert max(rows_touched(gradient)) == family.analysis_reach


def test_transforms_in_tiles_equal_them_whole(family_model):
    """Rows in cores of 2 or 4 elements (inner windows exactly the reach beyond their cores), columns
    in two tiles; the latent and image sizes not multiples of the cores."""
    family, model, params = family_model
    stride, reach = family.latent_stride, family.synthesis_reach
    h, w = 2 * reach + 9, 4 * reach + 7
    rows, cols = axis_tiles(h, -(-h // 2), reach), axis_tiles(w, 2, reach)
    assert len(rows.cores) > 4 and len(cols.cores) == 2
    y = jax.random.normal(jax.random.PRNGKey(3), (1, h, w, 8))
    synthesis = lambda y: model.apply(params, y, (stride * y.shape[1], stride * y.shape[2]),  # noqa: E731
                                      method=CompressionModel.synthesis)  # fmt: skip
    whole, tiled = synthesis(y), jax.jit(lambda y: map_tiles(synthesis, y, rows, cols, 1, stride))(y)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * float(jnp.abs(whole).max()))

    reach, z_stride = family.analysis_reach, family.hyper_stride // stride
    x = jax.random.uniform(jax.random.PRNGKey(4), (1, stride * (2 * reach + 9), stride * (4 * reach + 7), 3))
    x = pad_to_multiple(x, family.hyper_stride)
    h, w = x.shape[1] // stride, x.shape[2] // stride
    rows, cols = axis_tiles(h, -(-h // 4), reach, z_stride), axis_tiles(w, 2, reach, z_stride)
    assert len(rows.cores) > 3 and len(cols.cores) == 2
    analysis = lambda x: model.apply(params, x, method=CompressionModel.analysis)  # noqa: E731
    whole, tiled = analysis(x), jax.jit(lambda x: map_tiles(analysis, x, rows, cols, stride, 1))(x)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * float(jnp.abs(whole).max()))
