"""Bjøntegaard-delta rate and PSNR between two rate-distortion curves.

G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
ITU-T VCEG-M33, 2001. With r = log10(rate) and D = PSNR, each curve is
interpolated as r(D); over the overlapping PSNR interval [D_lo, D_hi],

    BD-rate = 10^( (1 / (D_hi - D_lo)) * int_{D_lo}^{D_hi} (r_test(D) - r_anchor(D)) dD ) - 1   (in %)

the average rate change of the test curve at equal quality (negative: the test
codec saves rate). BD-PSNR swaps the roles: D(r) averaged over the overlapping
log-rate interval, in dB.

Interpolation methods:
  - `pchip`: piecewise cubic Hermite, as in the JCT-VC / JVET common test
    condition sheets (JCTVC-L1100, JVET-T2010); the default.
  - `cubic`: one least-squares cubic polynomial per curve, VCEG-M33's original.
  - `akima`: Akima splines (Herglotz et al., ICIP 2022).

The arithmetic is the `bjontegaard` package's (FAU-LMS, BSD-3-Clause; its
PCHIP matches the JVET sheet to 10 decimals, per its documentation); this
module adds the checks that it leaves to the caller and turns bad curves into
errors instead of NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

METHODS = ("pchip", "cubic", "akima")
MIN_POINTS = 4


class BDRateError(ValueError):
    """Curves for which a Bjøntegaard delta is not defined."""


def _curve(rates: Sequence[float], psnrs: Sequence[float], which: str) -> tuple[np.ndarray, np.ndarray]:
    """(rates, psnrs) sorted by rate, after checking they form a usable RD curve."""
    r = np.asarray(rates, np.float64)
    d = np.asarray(psnrs, np.float64)
    if r.ndim != 1 or r.shape != d.shape:
        raise BDRateError(f"{which}: need 1-D rates and PSNRs of equal length, got {r.shape}, {d.shape}")
    if len(r) < MIN_POINTS:
        raise BDRateError(f"{which}: need at least {MIN_POINTS} rate-distortion points, got {len(r)}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d)) and np.all(r > 0)):
        raise BDRateError(f"{which}: rates must be positive and finite, PSNRs finite; got {r}, {d}")
    order = np.argsort(r)
    r, d = r[order], d[order]
    # Interpolating r(D) needs D strictly increasing with the rate.
    if np.any(np.diff(r) <= 0) or np.any(np.diff(d) <= 0):
        raise BDRateError(
            f"{which}: the curve is not strictly monotonic (PSNR must rise with the rate): "
            f"rates {r.tolist()}, PSNRs {d.tolist()}"
        )
    return r, d


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise BDRateError(f"unknown interpolation method {method!r}; use one of {', '.join(METHODS)}")


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> None:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if hi <= lo:
        raise BDRateError(
            f"the curves do not overlap in {what}: anchor [{a.min():g}, {a.max():g}], "
            f"test [{b.min():g}, {b.max():g}]"
        )


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_psnrs: Sequence[float],
    test_rates: Sequence[float],
    test_psnrs: Sequence[float],
    method: str = "pchip",
) -> float:
    """Bjøntegaard-delta rate of the test curve against the anchor, in percent.

    Rates in any unit (bpp, kbps), the same for both curves. At least 4 points
    per curve, PSNR strictly increasing with the rate, and overlapping PSNR
    ranges; otherwise `BDRateError`. The curves may have different numbers of
    points. Less than 75 % overlap gives a warning from `bjontegaard`.
    """
    import bjontegaard  # imports matplotlib; only when needed

    _check_method(method)
    ra, da = _curve(anchor_rates, anchor_psnrs, "anchor")
    rt, dt = _curve(test_rates, test_psnrs, "test")
    _overlap(da, dt, "PSNR")
    return float(bjontegaard.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False))


def bd_psnr(
    anchor_rates: Sequence[float],
    anchor_psnrs: Sequence[float],
    test_rates: Sequence[float],
    test_psnrs: Sequence[float],
    method: str = "pchip",
) -> float:
    """Bjøntegaard-delta PSNR of the test curve against the anchor, in dB (positive: test better)."""
    import bjontegaard

    _check_method(method)
    ra, da = _curve(anchor_rates, anchor_psnrs, "anchor")
    rt, dt = _curve(test_rates, test_psnrs, "test")
    _overlap(np.log10(ra), np.log10(rt), "rate")
    return float(bjontegaard.bd_psnr(ra, da, rt, dt, method=method, require_matching_points=False))


def bd_rate_table(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], anchor: str, method: str = "pchip"
) -> dict[str, float | None]:
    """BD-rate (%) of every curve `name: (rates, psnrs)` against `curves[anchor]`.

    A curve whose BD-rate is undefined (too few points, not monotonic, no
    overlap) maps to None, with a warning naming the reason, so that one bad
    curve does not hide the others.
    """
    if anchor not in curves:
        raise BDRateError(f"anchor {anchor!r} is not among the curves: {', '.join(curves)}")
    table: dict[str, float | None] = {}
    for name, (rates, psnrs) in curves.items():
        try:
            table[name] = bd_rate(*curves[anchor], rates, psnrs, method=method)
        except BDRateError as e:
            warnings.warn(f"BD-rate of {name} vs {anchor}: {e}", stacklevel=2)
            table[name] = None
    return table
