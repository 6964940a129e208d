"""The stage function: causality, equivalence with a dense reference, cost."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.model.context import (
    MAX_STAGE_BRANCHES,
    EntropyParameters,
    MultistageContext,
    stage_tap_counts,
    stage_taps,
)
from mscm_jax.model.schedules import BUILTIN_PATTERNS, get_schedule

M = 4
OUT = 2 * M
# 9 x 10 is divisible by none of the patch sizes 2, 3, 4: padding positions everywhere.
LATENT = (9, 10)
SERIAL_LATENT = (5, 6)

RANDOM_CUSTOM = np.random.default_rng(0).permutation(16).reshape(4, 4) % 5  # 5 stages, 4x4


def schedule_specs():
    return [*BUILTIN_PATTERNS, RANDOM_CUSTOM.tolist(), [[0, 2], [3, 1]]]


def spec_id(spec):
    return spec if isinstance(spec, str) else "custom" + "".join(str(v) for r in spec for v in r)


@functools.cache
def _setup(spec_key):
    spec = spec_key if isinstance(spec_key, str) else [list(r) for r in spec_key]
    schedule = get_schedule(spec)
    latent = SERIAL_LATENT if schedule.is_serial else LATENT
    module = MultistageContext(schedule, M, OUT)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(hash(spec_id(spec)) % 2**31), 3)
    y = jnp.round(3 * jax.random.normal(k1, (2, *latent, M)))
    hyper = jax.random.normal(k2, (2, *latent, 2 * M))
    params = module.init(k3, y, hyper, method=MultistageContext.all_stages)
    decode_stage = jax.jit(lambda p, s, y, h: module.apply(p, s, y, h, method=MultistageContext.decode_stage))
    all_stages = jax.jit(lambda p, y, h: module.apply(p, y, h, method=MultistageContext.all_stages))
    plan = schedule.stage_plan(*latent)
    return schedule, module, params, y, hyper, decode_stage, all_stages, plan


def setup_for(spec):
    key = spec if isinstance(spec, str) else tuple(tuple(r) for r in spec)
    return _setup(key)


def stage_elements(plan, s, p):
    """Latent (rows, cols) index arrays of entry (s, p), and which lie in the latent."""
    h, w = plan.grid
    r0, c0 = plan.positions[s, p]
    rows = r0 + plan.stride * np.arange(h)
    cols = c0 + plan.stride * np.arange(w)
    inside = (rows[:, None] < plan.latent_shape[0]) & (cols[None, :] < plan.latent_shape[1])
    return rows, cols, inside


def stages_to_check(plan):
    if plan.num_stages <= 16:
        return range(plan.num_stages)
    return [0, 1, 7, plan.num_stages // 2, plan.num_stages - 1]


def context_from_stage_map(plan, s):
    """(P, k*k): which window taps of each entry of stage `s` hold an element of an earlier stage.

    Read off `plan.stage_map` at an element of the entry whose whole 5x5 window
    lies inside the latent (independently of `Schedule.context_kernel_mask`);
    None if some valid entry has no such element.
    """
    height, width = plan.latent_shape
    out = np.zeros((plan.max_positions, 25), bool)
    for p in range(plan.max_positions):
        if not plan.valid[s, p]:
            continue
        rows, cols, _ = stage_elements(plan, s, p)
        inner_r = [r for r in rows if 2 <= r < height - 2]
        inner_c = [c for c in cols if 2 <= c < width - 2]
        if not inner_r or not inner_c:
            return None
        r, c = inner_r[0], inner_c[0]
        out[p] = (plan.stage_map[r - 2 : r + 3, c - 2 : c + 3] < s).ravel()
    return out


def dense_reference(module, params, y, hyper, kernel_mask, weight_set):
    """Full-resolution masked 5x5 convolution + the parameter network."""
    if module.schedule.num_context_weight_sets == 0:
        context = jnp.zeros((*y.shape[:3], 2 * M))
    else:
        kernel = params["params"]["context_kernel"][weight_set] * kernel_mask[:, :, None, None]
        context = jax.lax.conv_general_dilated(
            y, kernel, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    net_params = {"params": params["params"]["entropy_parameters"]}
    return EntropyParameters(M, OUT).apply(net_params, jnp.concatenate([hyper, context], -1))


@pytest.mark.parametrize("spec", schedule_specs(), ids=spec_id)
def test_stage_function_equals_dense_masked_convolution(spec):
    _schedule, module, params, y, hyper, decode_stage, all_stages, plan = setup_for(spec)
    full = all_stages(params, y, hyper)
    stage_by_stage = np.zeros(full.shape, np.float32)
    for s in range(plan.num_stages):
        out = np.asarray(decode_stage(params, s, y, hyper))
        for p in range(plan.max_positions):
            if not plan.valid[s, p]:
                continue
            rows, cols, inside = stage_elements(plan, s, p)
            mask = plan.tap_mask[s, p].reshape(5, 5).astype(np.float32)
            if s in stages_to_check(plan):
                ref = dense_reference(module, params, y, hyper, mask, plan.weight_index[s])
                ref = np.asarray(ref)[:, rows[inside.any(1)]][:, :, cols[inside.any(0)]]
                got = out[p][:, : ref.shape[1], : ref.shape[2]]
                np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
            r_in, c_in = rows[inside.any(1)], cols[inside.any(0)]
            stage_by_stage[:, r_in[:, None], c_in[None, :]] = out[p][:, : len(r_in), : len(c_in)]
    # Training (all stages at once, vmapped) sees what the decoder sees.
    np.testing.assert_allclose(np.asarray(full), stage_by_stage, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", schedule_specs(), ids=spec_id)
def test_causality(spec):
    _schedule, _module, params, y, hyper, decode_stage, _, plan = setup_for(spec)
    stage_map = plan.stage_map
    rng = np.random.default_rng(1)
    for s in stages_to_check(plan):
        base = np.asarray(decode_stage(params, s, y, hyper))
        # Elements of stage >= s (not yet decoded): any value, even NaN, changes nothing.
        later = jnp.asarray(stage_map >= s)[None, :, :, None]
        garbage = jnp.where(later, jnp.nan, y)
        np.testing.assert_array_equal(np.asarray(decode_stage(params, s, garbage, hyper)), base)
        noisy = jnp.where(later, y + jnp.asarray(rng.normal(size=y.shape) * 10), y)
        np.testing.assert_array_equal(np.asarray(decode_stage(params, s, noisy, hyper)), base)
        if s == 0:
            continue
        # An earlier-stage element inside the 5x5 window of a stage-s element changes it.
        p = 0
        rows, cols, _ = stage_elements(plan, s, p)
        r, c = rows[0], cols[0]
        window = [
            (r + dy - 2, c + dx - 2)
            for dy in range(5)
            for dx in range(5)
            if 0 <= r + dy - 2 < stage_map.shape[0]
            and 0 <= c + dx - 2 < stage_map.shape[1]
            and stage_map[r + dy - 2, c + dx - 2] < s
        ]
        assert window, f"stage {s} of {spec_id(spec)} has no earlier neighbour to test"
        rr, cc = window[rng.integers(len(window))]
        changed = np.asarray(decode_stage(params, s, y.at[:, rr, cc, :].add(5.0), hyper))
        assert np.abs(changed[p][:, 0, 0] - base[p][:, 0, 0]).max() > 1e-4


def test_checkerboard_anchors_are_half():
    plan = get_schedule("checkerboard").stage_plan(8, 12)
    assert (plan.stage_map == 0).sum() == 8 * 12 // 2
    assert plan.elements_per_stage.tolist() == [48, 48]


def _flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"]


@pytest.mark.parametrize("name, positions", [("mscm4x4-paper", 1), ("mscm2x2", 1), ("checkerboard", 2)])
def test_stage_cost_falls_as_inverse_patch_area(name, positions):
    """XLA-counted FLOPs of one stage vs. a full-resolution pass (not time)."""
    m, latent = 16, (32, 48)
    schedule = get_schedule(name)
    module = MultistageContext(schedule, m, 3 * 3 * m)
    y = jnp.zeros((1, *latent, m))
    hyper = jnp.zeros((1, *latent, 2 * m))
    params = module.init(jax.random.PRNGKey(0), y, hyper, method=MultistageContext.all_stages)
    stage = _flops(
        lambda p, s, y, h: module.apply(p, s, y, h, method=MultistageContext.decode_stage),
        params,
        jnp.int32(1),
        y,
        hyper,
    )
    kernel = params["params"]["context_kernel"][0]
    net = {"params": params["params"]["entropy_parameters"]}

    def full_pass(kernel, net, y, hyper):
        context = jax.lax.conv_general_dilated(
            y, kernel, (1, 1), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return EntropyParameters(m, 3 * 3 * m).apply(net, jnp.concatenate([hyper, context], -1))

    full = _flops(full_pass, kernel, net, y, hyper)
    n = schedule.patch_size
    ratio = stage / full
    assert ratio == pytest.approx(positions / n**2, rel=0.1), (stage, full)


RASTER_5X5 = np.arange(25).reshape(5, 5).tolist()  # more stages than MAX_STAGE_BRANCHES


@pytest.mark.parametrize(
    "name",
    ["mscm4x4-paper", "checkerboard", "hyperprior", "serial", RANDOM_CUSTOM.tolist(), RASTER_5X5],
    ids=spec_id,
)
def test_reading_only_the_context_taps_gives_the_same_parameters(name):
    """A decoder's stage kernels (`stage_taps`: the context taps only, padded to one count) give
    what the whole masked window gives: read by constant slices per stage (up to
    `MAX_STAGE_BRANCHES` stages; the custom pattern's entries have different taps) or by a
    gather per tap count (serial, the 5x5 raster)."""
    assert (len(RASTER_5X5) ** 2 > MAX_STAGE_BRANCHES) and (16 <= MAX_STAGE_BRANCHES)
    _schedule, module, params, y, hyper, decode_stage, _, plan = setup_for(name)
    kernels = module.apply(params, *plan.latent_shape, method=MultistageContext.stage_kernels)
    with_kernel = jax.jit(
        lambda p, s, y, h, k: module.apply(p, s, y, h, k, method=MultistageContext.decode_stage)
    )
    if plan.num_stages <= 25:
        stages = range(plan.num_stages)
    else:  # serial: stage 15 is the one element of the 5 x 6 latent whose whole window lies inside
        stages = [0, 1, 7, plan.num_stages // 2, plan.num_stages - 1]
    checked = 0
    for s in stages:
        expected = context_from_stage_map(plan, s)
        if expected is not None:  # the taps are exactly the earlier-decoded neighbours, read off the map
            taps, context = stage_taps(plan, s)
            np.testing.assert_array_equal(taps, np.flatnonzero(expected.any(axis=0)))
            np.testing.assert_array_equal(context, expected[:, taps])
            # Padded at the end to one tap count, the padding context for no entry.
            np.testing.assert_array_equal(np.asarray(kernels[s].taps)[: len(taps)], taps)
            assert not np.asarray(kernels[s].context)[:, len(taps) :].any()
            checked += 1
        got = with_kernel(params, s, y, hyper, kernels[s])
        np.testing.assert_allclose(np.asarray(got), np.asarray(decode_stage(params, s, y, hyper)), atol=2e-5)
    assert checked == (1 if name == "serial" else len(stages))
    if name == "mscm4x4-paper":  # docs/paper.md's context positions per stage; 192 taps instead of 15 x 25
        counts = [len(stage_taps(plan, s)[0]) for s in range(plan.num_stages)]
        assert counts == [0, 1, 2, 4, 5, 8, 12, 9, 11, 15, 17, 18, 21, 22, 23, 24]
        assert stage_tap_counts(plan).tolist() == counts
    if name == "serial":  # every stage shares one kernel object
        assert len({id(k) for k in kernels}) == 1
