"""Rate-distortion plots and BD-rate tables of evaluation results (`mscm-jax plot`).

Reads JSON files in the evaluation's layout (CompressAI's `eval_model`
layout: `name` and `results` lists of `bpp`, `psnr-rgb`, `ms-ssim-rgb`; ours
from `mscm-jax evaluate --model ...`, classical codecs' from `mscm-jax
evaluate --codec ...`, or CompressAI's own), one RD curve per file, and:

- plots bpp against PSNR-RGB and against MS-SSIM-RGB in dB,
  `-10 log10(1 - MS-SSIM)`, the usual way to spread MS-SSIM near 1
  (CompressAI's plots do the same);
- computes the BD-rate (`bd_rate.bd_rate`, PCHIP by default) of every curve
  against one anchor curve, on PSNR and on MS-SSIM (dB); an undefined value
  (too few points, not monotonic, no overlap) is `n/a` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Sequence

from mscm_jax.files import write_atomically
from mscm_jax.tools.bd_rate import BDRateError, bd_rate


def ms_ssim_db(value: float | None) -> float | None:
    """MS-SSIM in dB: -10 log10(1 - MS-SSIM); None where undefined (null, or exactly 1)."""
    if value is None or not value < 1:
        return None
    return -10 * math.log10(1 - value)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One results file: its points sorted by bpp; MS-SSIM (dB) None where undefined."""

    name: str
    path: str
    bpp: tuple[float, ...]
    psnr: tuple[float, ...]
    ms_ssim_db: tuple[float | None, ...]

    def ms_ssim_points(self) -> tuple[list[float], list[float]]:
        """(bpp, MS-SSIM dB) of the points where MS-SSIM is defined."""
        pairs = [(r, m) for r, m in zip(self.bpp, self.ms_ssim_db, strict=True) if m is not None]
        return [r for r, _ in pairs], [m for _, m in pairs]


def load_curve(path: str | os.PathLike) -> Curve:
    """The RD curve of one results JSON (ValueError, naming the file, if it is not one)."""
    path = os.fspath(path)
    if not os.path.exists(path):  # a folder is not missing: open() names what it is
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
        results = data["results"]
        bpp, psnr = results["bpp"], results["psnr-rgb"]
        ms_ssim = results.get("ms-ssim-rgb") or [None] * len(bpp)
        if not (len(bpp) == len(psnr) == len(ms_ssim)) or not bpp:
            raise ValueError("results lists of different lengths, or empty")
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path}: not an evaluation results JSON ({why})") from None
    points = sorted(
        (float(r), float(p), ms_ssim_db(m))
        for r, p, m in zip(bpp, psnr, ms_ssim, strict=True)
        if r is not None and p is not None  # a lossless point (PSNR inf) is written as null
    )
    name = str(data.get("name") or os.path.splitext(os.path.basename(path))[0])
    return Curve(name, path, *(tuple(column) for column in zip(*points, strict=True)))


def load_curves(paths: Sequence[str | os.PathLike]) -> list[Curve]:
    """Curves of several files; a name used twice gets its file name appended."""
    curves = [load_curve(p) for p in paths]
    names = [c.name for c in curves]
    return [
        dataclasses.replace(c, name=f"{c.name} ({os.path.basename(c.path)})")
        if names.count(c.name) > 1
        else c
        for c in curves
    ]


def find_anchor(curves: Sequence[Curve], anchor: str) -> int:
    """Index of the curve named `anchor` or read from the file `anchor` ('' = the first)."""
    if not anchor:
        return 0
    for i, c in enumerate(curves):
        if anchor in (c.name, c.path) or os.path.abspath(anchor) == os.path.abspath(c.path):
            return i
    raise ValueError(f"--anchor {anchor!r} is none of the curves: {', '.join(c.name for c in curves)}")


def plot_rd(curves: Sequence[Curve], path: str | os.PathLike, title: str = "") -> None:
    """bpp vs PSNR (left) and vs MS-SSIM dB (right), one line per curve; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_psnr, ax_ms) = plt.subplots(1, 2, figsize=(12, 4.6))
    any_ms_ssim = False
    for c in curves:
        (line,) = ax_psnr.plot(c.bpp, c.psnr, "o-", markersize=4, label=c.name)
        rates, values = c.ms_ssim_points()
        if rates:
            any_ms_ssim = True
            ax_ms.plot(rates, values, "o-", markersize=4, color=line.get_color(), label=c.name)
    ax_psnr.set(xlabel="bpp", ylabel="PSNR-RGB (dB)", title="PSNR")
    ax_ms.set(xlabel="bpp", ylabel="MS-SSIM-RGB (dB) = -10 log10(1 - MS-SSIM)", title="MS-SSIM")
    if not any_ms_ssim:
        ax_ms.text(0.5, 0.5, "MS-SSIM undefined\n(images under 161 px a side)", ha="center", va="center",
                   transform=ax_ms.transAxes)  # fmt: skip
    for ax in (ax_psnr, ax_ms):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


@dataclasses.dataclass(frozen=True)
class BDRow:
    """BD-rates (%) of one curve against the anchor; None with the reason where undefined."""

    name: str
    points: int
    psnr: float | None
    ms_ssim: float | None
    psnr_note: str = ""
    ms_ssim_note: str = ""


def _bd(anchor: tuple[list, list], test: tuple[list, list], method: str) -> tuple[float | None, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = bd_rate(*anchor, *test, method=method)
        except BDRateError as e:
            return None, str(e)
    note = "; ".join(str(w.message) for w in caught)
    return value, note


def bd_rate_rows(curves: Sequence[Curve], anchor: int = 0, method: str = "pchip") -> list[BDRow]:
    """BD-rate of every curve (the anchor's own is 0) against `curves[anchor]`, on PSNR and MS-SSIM dB."""
    a = curves[anchor]
    rows = []
    for c in curves:
        psnr, psnr_note = _bd((list(a.bpp), list(a.psnr)), (list(c.bpp), list(c.psnr)), method)
        ms, ms_note = _bd(a.ms_ssim_points(), c.ms_ssim_points(), method)
        rows.append(BDRow(c.name, len(c.bpp), psnr, ms, psnr_note, ms_note))
    return rows


def bd_table_lines(rows: Sequence[BDRow], anchor_name: str, method: str = "pchip") -> list[str]:
    """The table `mscm-jax plot` prints, with one note per undefined or warned value."""
    width = max([len(r.name) for r in rows] + [5]) + 2
    lines = [
        f"BD-rate against {anchor_name} ({method}; negative: fewer bits at equal quality):",
        f"{'curve':<{width}}{'points':>7}{'PSNR':>16}{'MS-SSIM dB':>16}",
    ]
    notes = []
    for r in rows:
        cells = []
        for value, note, metric in ((r.psnr, r.psnr_note, "PSNR"), (r.ms_ssim, r.ms_ssim_note, "MS-SSIM")):
            mark = ""
            if note:
                notes.append(f"[{len(notes) + 1}] {r.name}, {metric}: {note}")
                mark = f" [{len(notes)}]"
            cells.append(("n/a" if value is None else f"{value:+.2f} %") + mark)
        lines.append(f"{r.name:<{width}}{r.points:>7}{cells[0]:>16}{cells[1]:>16}")
    return lines + notes
