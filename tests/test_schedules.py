import re

import numpy as np
import pytest

from mscm_jax.model import schedules
from mscm_jax.model.schedules import (
    BUILTIN_PATTERNS,
    PAPER_4X4_ORDER,
    Schedule,
    ScheduleError,
    get_schedule,
)


def context_counts(schedule: Schedule) -> list[int]:
    """Context positions per stage, for patterns with one position per stage."""
    masks = schedule.context_kernel_mask()
    return [
        int(masks[tuple(np.argwhere(schedule.pattern == s)[0])].sum()) for s in range(schedule.num_stages)
    ]


def test_mask_counts_match_the_authors_2x2():
    assert context_counts(get_schedule("mscm2x2")) == [0, 6, 10, 16]


def test_mask_counts_match_the_authors_4x4_order():
    expected = [0, 1, 2, 4, 5, 8, 12, 9, 11, 15, 17, 18, 21, 22, 23, 24]
    assert context_counts(get_schedule("mscm4x4-paper")) == expected
    assert get_schedule("mscm4x4-paper").pattern.tolist() == [list(r) for r in PAPER_4X4_ORDER]


def test_checkerboard_masks_and_anchor_fraction():
    cb = get_schedule("checkerboard")
    assert cb.num_stages == 2 and cb.anchor_fraction == 0.5
    masks = cb.context_kernel_mask()
    # Both non-anchor positions see the 12 anchors of the 5x5 window (He et al. 2021).
    assert masks[0, 1].sum() == masks[1, 0].sum() == 12
    assert masks[0, 0].sum() == masks[1, 1].sum() == 0


def test_serial_mask_is_causal_raster():
    mask = get_schedule("serial").context_kernel_mask()[0, 0]
    assert mask.sum() == 12
    assert mask[:2].all() and mask[2, :2].all() and not mask[2, 2:].any() and not mask[3:].any()


def test_mask_is_exactly_the_smaller_stages_of_the_window():
    rng = np.random.default_rng(0)
    pattern = rng.permutation(9).reshape(3, 3) % 4
    schedule = get_schedule(pattern.tolist())
    masks = schedule.context_kernel_mask()
    tiled = np.tile(pattern, (5, 5))  # Brute force on a tiled latent.
    for i in range(3):
        for j in range(3):
            r, c = 6 + i, 6 + j
            window = tiled[r - 2 : r + 3, c - 2 : c + 3]
            np.testing.assert_array_equal(masks[i, j], window < pattern[i, j])


def test_module_diagram_is_the_code():
    """The picture in the module docstring: mscm2x2's pattern, the window of a
    stage-3 element and its context taps, as `context_kernel_mask` has them."""
    rows = [line.split() for line in schedules.__doc__.splitlines() if re.fullmatch(r"[\d\s.#X]+", line)]
    rows = [r for r in rows if len(r) == 16]
    assert len(rows) == 5
    schedule = get_schedule("mscm2x2")
    tiled = np.tile(schedule.pattern, (3, 3))  # 6 x 6; a stage-3 element at (3, 3)
    np.testing.assert_array_equal([[int(v) for v in r[:6]] for r in rows], tiled[:5, :6])
    window = [r[6:11] for r in rows]
    assert window[2][2] == "X" and rows[2][13] == "X"
    window[2][2] = "3"
    np.testing.assert_array_equal(np.asarray(window, int), tiled[1:6, 1:6])
    taps = np.asarray([r[11:] for r in rows]) == "#"
    np.testing.assert_array_equal(taps, schedule.context_kernel_mask()[1, 1])
    assert f"context ({taps.sum()} taps)" in schedules.__doc__


def test_builtin_properties():
    rows = {s.name: s for s in map(get_schedule, BUILTIN_PATTERNS)}
    assert rows["hyperprior"].num_stages == 1 and rows["hyperprior"].num_context_weight_sets == 0
    assert rows["mscm3x3"].num_stages == 9 and rows["mscm3x3"].anchor_fraction == pytest.approx(1 / 9)
    assert rows["mscm4x4"].num_stages == 16 and rows["mscm4x4"].num_context_weight_sets == 15
    assert rows["serial"].is_serial and rows["serial"].num_stages is None


def test_custom_patterns_and_json():
    s = get_schedule("[[0, 2], [3, 1]]")
    assert s.num_stages == 4 and s == get_schedule([[0, 2], [3, 1]])
    four = get_schedule([[0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]])
    assert four.num_stages == 4 and four.anchor_fraction == 0.25
    assert Schedule.from_config(four.to_config()) == four


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "empty"),
        ([[0, 1], [2]], "square"),
        ([[0, 1, 2], [3, 4, 5]], "square"),
        ([[0, 2], [3, 4]], "0..S-1"),
        ([[1, 1], [1, 1]], "0..S-1"),
        ([[0, 1.5], [2, 3]], "integers"),
        ("mscm5x5", "unknown schedule"),
        ("[[0, 1], [2,", "could not parse"),
    ],
)
def test_invalid_patterns_are_clear_errors(bad, message):
    with pytest.raises(ScheduleError, match=message):
        get_schedule(bad)


def test_stage_plan_pads_latent_not_divisible_by_patch():
    plan = get_schedule("mscm3x3").stage_plan(32, 48)
    assert plan.grid == (11, 16) and plan.padded_shape == (33, 48)
    assert plan.elements_per_stage.sum() == 32 * 48
    masks = [plan.element_mask(s) for s in range(plan.num_stages)]
    assert [int(m.sum()) for m in masks] == plan.elements_per_stage.tolist()
    assert plan.stage_map.shape == (32, 48)
    # The 4-stage 4x4 pattern: several positions per stage, each with its own mask.
    plan = get_schedule([[0, 1, 0, 1], [2, 3, 2, 3], [0, 1, 0, 1], [2, 3, 2, 3]]).stage_plan(8, 8)
    assert plan.max_positions == 4 and plan.valid.all()
    assert plan.weight_index.tolist() == [0, 0, 1, 2]


def test_serial_plan_one_position_per_stage():
    plan = get_schedule("serial").stage_plan(3, 4)
    assert plan.num_stages == 12 and plan.max_positions == 1
    assert plan.positions[5, 0].tolist() == [1, 1]
    assert plan.stage_map.tolist() == np.arange(12).reshape(3, 4).tolist()


def test_draw():
    text = get_schedule("mscm2x2").draw()
    assert "| 0 | 1 |" in text and "| 2 | 3 |" in text
