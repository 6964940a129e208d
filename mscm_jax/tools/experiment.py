"""Helpers of the scripts in `experiments/`: provenance, schedule-comparison summaries, tables, plots.

The scripts train and code; this module turns their `evaluate.ModelResult`s
into the numbers of the frozen-transform table (pure functions, tested) and
records what produced them (command, commit, machine).

**Resolution rules.** Each schedule is trained with several seeds; its rate is
the mean over seeds of the per-seed mean payload bpp over the images, its
spread the sample standard deviation over seeds.

- *Unpaired* (conservative): two schedules are ranked only if their means
  differ by more than the sum of their spreads.
- *Paired*: a seed fixes the batches, the noise and the initial hyperprior
  weights of every schedule alike, so much of the seed-to-seed variation is
  shared; the per-seed relative changes `rate_a(seed) / rate_b(seed) - 1` are
  ranked only if their mean exceeds their own sample sd in magnitude.

Otherwise a difference is reported as unresolved, not as a ranking.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import importlib.resources
import itertools
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

from mscm_jax.model.schedules import get_schedule
from mscm_jax.model.transforms import get_transform_family
from mscm_jax.tools.evaluate import ModelResult

PAPER_ORDER = ("serial", "mscm4x4", "mscm2x2", "checkerboard", "hyperprior")  # the paper's bpp ranking
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def torch_reference_python(timeout: float = 1500) -> str:
    """Python of the PyTorch + CompressAI venv, made on first use.

    By the package's `torch_env/setup_env.sh`, under $MSCM_JAX_TORCH_VENV or
    ~/.cache/mscm-jax/torch-venv; the parity tests and `experiments/` share it.
    RuntimeError with the script's output if it cannot be made.
    """
    venv = os.path.expanduser(os.environ.get("MSCM_JAX_TORCH_VENV", "~/.cache/mscm-jax/torch-venv"))
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}  # the cp311 torch wheel
    # Concurrent callers (pytest-xdist workers): one makes the venv, the others wait, since the
    # script starts by removing a partial one.
    with (
        importlib.resources.as_file(importlib.resources.files("mscm_jax.tools") / "torch_env") as torch_env,
        open(f"{venv}.lock", "w") as lock,
    ):
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            ["bash", str(torch_env / "setup_env.sh"), venv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    if done.returncode:
        raise RuntimeError(
            f"could not set up the PyTorch reference venv at {venv}:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return os.path.join(venv, "bin", "python")


def run_metadata(argv: Sequence[str] | None = None) -> dict:
    """Command, git commit (and whether the tree had changes), machine, library versions, date."""
    import jax

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", REPO, *args], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "command": " ".join([os.path.basename(sys.executable), *(sys.argv if argv is None else argv)]),
        "git_commit": git("rev-parse", "HEAD").strip() or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
        "machine": f"{platform.node()}: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "devices": ", ".join(sorted({d.device_kind for d in jax.devices()})) + f" ({jax.default_backend()})",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_lines(meta: dict) -> list[str]:
    """Markdown bullets naming the commit, date and machine of a `run_metadata` record."""
    dirty = " (with uncommitted changes)" if meta["git_dirty"] else ""
    return [
        f"- commit `{meta['git_commit']}`{dirty}; {meta['date']}",
        f"- machine: {meta['machine']}; devices: {meta['devices']}; "
        f"JAX {meta['jax']}, Python {meta['python']}",
    ]


@dataclasses.dataclass(frozen=True)
class ScheduleSummary:
    """One schedule over its seeds: rates (bits over image pixels) and times, mean and spread."""

    label: str
    schedule: str  # name or JSON pattern
    patch: str
    stages: str
    anchor_fraction: float | None
    context_params: int  # 5x5 context weights
    context_group_params: int  # context weights + entropy-parameter network
    seeds: int
    bpp: float  # whole file, mean over seeds
    payload_bpp: float
    payload_bpp_sd: float  # sample sd over seeds (0 for one seed)
    seed_payload_bpp: tuple[float, ...]
    estimated_bpp: float | None  # the model's own estimate (forward pass), mean over images and seeds
    stage_bpp: tuple[float, ...]  # y bits per stage / pixels (parallel schedules)
    anchor_share: float | None  # stage-0 bits / all y bits
    z_bpp: float
    psnr: float
    entropy_decoding_time: float
    decoding_time: float
    latent_elements: float  # mean h*w of the coded latents (the stage count of `serial`)


def _seed_mean(result: ModelResult, values) -> float:
    return float(np.mean([values(r) for r in result.images]))


def summarize(
    label: str,
    schedule: str,
    results: Sequence[ModelResult],
    params: Sequence[dict],
    estimated_bpp: Sequence[float] = (),
    *,
    transform: str,
) -> ScheduleSummary:
    """Summary of one schedule from its per-seed results and parameter counts (`{"context": n, ...}`).

    `estimated_bpp`: per seed, the mean over images of the model's estimated bpp (optional).
    `transform`: the models' transform family, whose geometry gives the latent sizes.
    """
    s = get_schedule(schedule)
    family = get_transform_family(transform)
    latent_elements = lambda im: math.prod(family.latent_shapes(im.height, im.width)[0])  # noqa: E731
    payload = [r.mean("payload_bpp") for r in results]
    pixels = lambda im: im.height * im.width  # noqa: E731
    stage_bpp, share = (), None
    if not s.is_serial:
        per_stage = np.mean(
            [[np.asarray(im.stream_bits) / pixels(im) for im in r.images] for r in results], axis=(0, 1)
        )
        stage_bpp = tuple(float(v) for v in per_stage)
        share = float(
            np.mean([[im.stream_bits[0] / max(sum(im.stream_bits), 1) for im in r.images] for r in results])
        )
    return ScheduleSummary(
        label=label, schedule=schedule,
        patch="-" if s.is_serial else f"{s.patch_size}x{s.patch_size}",
        stages="h*w" if s.is_serial else str(s.num_stages), anchor_fraction=s.anchor_fraction,
        context_params=int(params[0]["context_kernel"]), context_group_params=int(params[0]["context"]),
        seeds=len(results), bpp=float(np.mean([r.mean("bpp") for r in results])),
        payload_bpp=float(np.mean(payload)),
        payload_bpp_sd=float(np.std(payload, ddof=1)) if len(payload) > 1 else 0.0,
        seed_payload_bpp=tuple(float(v) for v in payload),
        estimated_bpp=float(np.mean(estimated_bpp)) if len(estimated_bpp) else None,
        stage_bpp=stage_bpp, anchor_share=share,
        z_bpp=float(np.mean([_seed_mean(r, lambda im: im.z_bits / pixels(im)) for r in results])),
        psnr=float(np.mean([r.mean("psnr") for r in results])),
        entropy_decoding_time=float(np.mean([r.mean("entropy_decoding_time") for r in results])),
        decoding_time=float(np.mean([r.mean("decoding_time") for r in results])),
        latent_elements=float(np.mean([_seed_mean(r, latent_elements) for r in results])),
    )  # fmt: skip


def resolved(a: ScheduleSummary, b: ScheduleSummary) -> bool:
    """Whether the payload rates of a and b differ by more than the sum of their seed spreads."""
    return abs(a.payload_bpp - b.payload_bpp) > a.payload_bpp_sd + b.payload_bpp_sd


def paired_change(a: ScheduleSummary, b: ScheduleSummary) -> tuple[float, float] | None:
    """Mean and sample sd over seeds of the per-seed payload change a / b - 1, in %; None if unpaired."""
    if len(a.seed_payload_bpp) != len(b.seed_payload_bpp) or len(a.seed_payload_bpp) < 2:
        return None
    change = 100 * (np.asarray(a.seed_payload_bpp) / np.asarray(b.seed_payload_bpp) - 1)
    return float(change.mean()), float(change.std(ddof=1))


def paired_resolved(a: ScheduleSummary, b: ScheduleSummary) -> bool:
    """Whether the mean per-seed change exceeds its own seed spread (False without paired seeds)."""
    change = paired_change(a, b)
    return change is not None and abs(change[0]) > change[1]


def rate_change(a: ScheduleSummary, reference: ScheduleSummary) -> str:
    """Paired payload change of a vs reference (mean ± sd over seeds, %), marked by both rules."""
    if a is reference:
        return "0"
    change = paired_change(a, reference)
    if change is None:
        text = f"{100 * (a.payload_bpp / reference.payload_bpp - 1):+.2f} %"
        return text if resolved(a, reference) else text + " (unresolved)"
    text = f"{change[0]:+.2f} ± {change[1]:.2f} %"
    if resolved(a, reference):
        return text
    return text + (" (paired only)" if paired_resolved(a, reference) else " (unresolved)")


def _verdict(better: ScheduleSummary, worse: ScheduleSummary, is_resolved: bool) -> str:
    if not is_resolved:
        return "unresolved"
    return "holds" if better.payload_bpp < worse.payload_bpp else "REVERSED"


def paper_ordering(summaries: dict[str, ScheduleSummary]) -> list[str]:
    """Verdict on each adjacent pair of the paper's ranking (`PAPER_ORDER`), by both resolution rules."""
    lines = []
    for better, worse in itertools.pairwise(PAPER_ORDER):
        if better not in summaries or worse not in summaries:
            continue
        a, b = summaries[better], summaries[worse]
        relation = "<=" if better == "serial" else "<"
        change = paired_change(a, b)
        paired = "" if change is None else f"; paired change {change[0]:+.2f} ± {change[1]:.2f} %"
        lines.append(
            f"{better} {relation} {worse}: unpaired {_verdict(a, b, resolved(a, b))}, "
            f"paired {_verdict(a, b, paired_resolved(a, b))} "
            f"({a.payload_bpp:.4f} ± {a.payload_bpp_sd:.4f} vs "
            f"{b.payload_bpp:.4f} ± {b.payload_bpp_sd:.4f} bpp{paired})"
        )
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(
    summaries: Sequence[ScheduleSummary], serial: str = "serial", checkerboard: str = "checkerboard"
) -> str:
    """The frozen-transform table; rate changes use payload bpp (file bpp adds the header, more per stage)."""
    by_label = {s.label: s for s in summaries}
    head = ("| schedule | patch | stages | anchors | context weights | context + entropy params | "
            "payload bpp (mean ± sd over seeds) | file bpp | estimated bpp | anchors' share of y | "
            "y bpp per stage | "
            "vs serial | vs checkerboard | entropy decoding ms | PSNR dB |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        per_stage = " ".join(f"{v:.4f}" for v in s.stage_bpp) if s.stage_bpp else "(one stream)"
        share = "-" if s.anchor_share is None else f"{100 * s.anchor_share:.1f} %"
        lines.append(
            f"| {s.label} | {s.patch} | {s.stages} | {_fmt(s.anchor_fraction, '.4f')} | "
            f"{s.context_params:,} | "
            f"{s.context_group_params:,} | {s.payload_bpp:.4f} ± {s.payload_bpp_sd:.4f} | {s.bpp:.4f} | "
            f"{_fmt(s.estimated_bpp, '.4f')} | "
            f"{share} | "
            f"{per_stage} | {rate_change(s, by_label[serial]) if serial in by_label else '-'} | "
            f"{rate_change(s, by_label[checkerboard]) if checkerboard in by_label else '-'} | "
            f"{1e3 * s.entropy_decoding_time:.1f} | {s.psnr:.2f} |"
        )
    return "\n".join(lines)


def plot_vs_stages(summaries: Sequence[ScheduleSummary], path_bpp: str, path_time: str) -> None:
    """bpp vs stages and entropy-decoding time vs stages (log x; serial at h*w stages), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s.latent_elements if s.stages == "h*w" else int(s.stages) for s in summaries]
    for path, values, errors, ylabel in (
        (path_bpp, [s.payload_bpp for s in summaries], [s.payload_bpp_sd for s in summaries],
         "payload bpp (real coding, mean ± sd over seeds)"),
        (path_time, [1e3 * s.entropy_decoding_time for s in summaries], None,
         "entropy decoding ms per image"),
    ):  # fmt: skip
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.errorbar(x, values, yerr=errors, fmt="o", capsize=3)
        for xi, yi, s in zip(x, values, summaries, strict=True):
            ax.annotate(s.label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("decoding stages (serial: latent elements h*w)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


# --------------------------------------------------------------------------
# Rate-distortion sweeps.
# --------------------------------------------------------------------------


def rd_curves(results: dict[str, Sequence[ModelResult]]) -> dict[str, tuple[list[float], list[float]]]:
    """`{schedule: (bpp list, PSNR list)}`, one point per model (quality), sorted by rate."""
    curves = {}
    for name, models in results.items():
        points = sorted((r.mean("bpp"), r.mean("psnr")) for r in models)
        curves[name] = ([p[0] for p in points], [p[1] for p in points])
    return curves


def bd_rate_markdown(curves: dict[str, tuple[Sequence[float], Sequence[float]]], anchor: str) -> str:
    """A markdown table of BD-rate (PCHIP, `bd_rate.bd_rate_table`) of each curve vs the anchor."""
    import warnings

    from mscm_jax.tools.bd_rate import bd_rate_table

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = bd_rate_table(curves, anchor)
    reasons = {
        name: str(w.message)
        for w in caught
        for name in curves
        if str(w.message).startswith(f"BD-rate of {name} ")
    }
    lines = [f"| schedule | points | BD-rate vs {anchor} (bpp, PSNR-RGB, PCHIP) |", "|---|---|---|"]
    for name, value in table.items():
        text = f"{value:+.2f} %" if value is not None else f"undefined: {reasons.get(name, 'see warnings')}"
        lines.append(f"| {name} | {len(curves[name][0])} | {text} |")
    return "\n".join(lines)


def plot_rd(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str) -> None:
    """RD curves (bpp vs PSNR-RGB), one line per schedule, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, (rates, psnrs) in curves.items():
        ax.plot(rates, psnrs, "o-", label=name)
    ax.set_xlabel("bpp (real coding, whole file)")
    ax.set_ylabel("PSNR-RGB (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
