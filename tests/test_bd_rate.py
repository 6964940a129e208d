"""BD-rate against published curve pairs with known results, exact cases, and input checks."""

import numpy as np
import pytest

from mscm_jax.tools.bd_rate import BDRateError, bd_psnr, bd_rate, bd_rate_table

# JCTVC-E137 curve pairs (rate, PSNR) with the BD-rates of the JCT-VC PCHIP
# sheet, as published in Netflix/vmaf python/test/bd_rate_calculator_test.py
# (BDrateCalculatorJCTVCTest; values there are fractions, here percent).
JCTVC_E137 = [
    (
        [(108048.8736, 43.6471), (61279.976, 40.3953), (33905.6656, 37.247), (18883.6928, 34.2911)],
        [(108061.2784, 43.6768), (61299.9936, 40.4232), (33928.7472, 37.2761), (18910.912, 34.3147)],
        -0.465215420752807,
    ),
    (
        [(40433.8848, 37.5761), (7622.7456, 35.3756), (2394.488, 33.8977), (1017.6184, 32.0603)],
        [(40370.12, 37.5982), (7587.0024, 35.4025), (2390.0944, 33.9194), (1017.0984, 32.0822)],
        -1.8779823450567612,
    ),
]

# The example curves of the `bjontegaard` package's README (libx265 presets).
ANCHOR = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
TEST = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])


@pytest.mark.parametrize("anchor, test, expected", JCTVC_E137)
def test_pchip_matches_the_jctvc_sheet(anchor, test, expected):
    (ra, da), (rt, dt) = zip(*anchor, strict=True), zip(*test, strict=True)
    # vmaf pins these to 4 decimals of the fraction; we see agreement to ~1e-12 %.
    assert bd_rate(ra, da, rt, dt, method="pchip") == pytest.approx(expected, abs=1e-8)


def curve(psnrs, log_rate):
    psnrs = np.asarray(psnrs, np.float64)
    return list(10 ** log_rate(psnrs)), list(psnrs)


@pytest.mark.parametrize("method", ["pchip", "cubic", "akima"])
def test_identical_curves_give_zero_and_scaled_rates_give_the_scale(method):
    assert bd_rate(*ANCHOR, *ANCHOR, method=method) == pytest.approx(0, abs=1e-12)
    assert bd_psnr(*ANCHOR, *ANCHOR, method=method) == pytest.approx(0, abs=1e-12)
    rates, psnrs = ANCHOR
    assert bd_rate(*ANCHOR, [0.9 * r for r in rates], psnrs, method=method) == pytest.approx(-10, abs=1e-9)
    assert bd_rate(*ANCHOR, [2 * r for r in rates], psnrs, method=method) == pytest.approx(100, abs=1e-9)
    # A constant PSNR gain of 0.5 dB at every rate.
    assert bd_psnr(*ANCHOR, rates, [p + 0.5 for p in psnrs], method=method) == pytest.approx(0.5, abs=1e-9)


def test_cubic_is_exact_on_cubic_curves():
    # log10 r_anchor(D) = cubic; r_test = r_anchor * 10^(0.01 (D - 30)), D in [30, 40]
    # at both curves' points: the mean log-rate gap over [30, 40] is 0.05 -> 10^0.05 - 1.
    cubic = lambda d: 1e-4 * (d - 30) ** 3 - 2e-3 * (d - 30) ** 2 + 0.12 * d - 3  # noqa: E731
    anchor = curve([30, 33, 36, 40], cubic)
    test = curve([30, 32, 37, 40], lambda d: cubic(d) + 0.01 * (d - 30))
    assert bd_rate(*anchor, *test, method="cubic") == pytest.approx(100 * (10**0.05 - 1), abs=1e-9)


def test_methods_agree_on_smooth_curves_and_keep_the_sign():
    values = {m: bd_rate(*ANCHOR, *TEST, method=m) for m in ("pchip", "cubic", "akima")}
    assert all(v < 0 for v in values.values())  # the test curve is better
    assert max(values.values()) - min(values.values()) < 1.0


def test_point_order_does_not_matter():
    rates, psnrs = ANCHOR
    assert bd_rate(rates[::-1], psnrs[::-1], *TEST) == pytest.approx(bd_rate(*ANCHOR, *TEST), abs=1e-12)


def test_bad_curves_are_errors():
    rates, psnrs = ANCHOR
    with pytest.raises(BDRateError, match="at least 4"):
        bd_rate(rates[:3], psnrs[:3], *TEST)
    with pytest.raises(BDRateError, match="not strictly monotonic"):
        bd_rate(rates, [40.0, 38.0, 39.0, 34.0], *TEST)
    with pytest.raises(BDRateError, match="do not overlap in PSNR"):
        bd_rate(*ANCHOR, rates, [p + 10 for p in psnrs])
    with pytest.raises(BDRateError, match="positive"):
        bd_rate([0.0, *rates[1:]], psnrs, *TEST)
    with pytest.raises(BDRateError, match="unknown interpolation method"):
        bd_rate(*ANCHOR, *TEST, method="linear")


def test_table_against_an_anchor_marks_undefined_entries():
    rates, psnrs = ANCHOR
    curves = {"a": ANCHOR, "b": TEST, "far": (rates, [p + 10 for p in psnrs])}
    with pytest.warns(UserWarning, match="far vs a"):
        table = bd_rate_table(curves, anchor="a")
    assert table["a"] == pytest.approx(0, abs=1e-12)
    assert table["b"] == pytest.approx(bd_rate(*ANCHOR, *TEST))
    assert table["far"] is None
