"""Benchmarks that print figures (speed goals live here, not in tests).

    python -m mscm_jax.bench stages [--height 512 --width 768 --channels 192]

`stages`: warm wall time of the entropy-parameter computation of *all* stages
of a schedule (context + parameter network, one jitted call per stage, as the
decoder runs them) on the latent of one image, for several schedules in one
run. Compilation is excluded and reported apart; the coder's own work and the
update of y_hat between stages are not included.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.context import MultistageContext
from mscm_jax.entropy_models import GaussianMixtureConditional
from mscm_jax.schedules import get_schedule
from mscm_jax.transforms import LATENT_STRIDE


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def bench_stages(
    schedules: list[str], height: int, width: int, channels: int, mixtures: int, repeats: int
) -> list[dict]:
    latent = (-(-height // LATENT_STRIDE), -(-width // LATENT_STRIDE))
    out_channels = GaussianMixtureConditional(mixtures).num_parameter_channels(channels)
    rng = np.random.default_rng(0)
    y_hat = jnp.asarray(np.round(rng.normal(0, 3, (1, *latent, channels))), jnp.float32)
    hyper = jnp.asarray(rng.normal(0, 1, (1, *latent, 2 * channels)), jnp.float32)
    rows = []
    for name in schedules:
        schedule = get_schedule(name)
        module = MultistageContext(schedule, channels, out_channels)
        params = jax.jit(lambda k, y, h, module=module: module.init(k, y, h, method="all_stages"))(
            jax.random.PRNGKey(0), y_hat, hyper
        )
        fn = jax.jit(lambda p, s, y, h, k, module=module: module.apply(p, s, y, h, k, method="decode_stage"))
        plan = module.plan(*latent)
        # As a decoder does: split the per-stage context weights once, up front.
        kernels = module.apply(params, *latent, method="stage_kernels")
        start = time.perf_counter()
        compiled = fn.lower(params, jnp.int32(0), y_hat, hyper, kernels[0]).compile()
        compile_s = time.perf_counter() - start
        stages = [jnp.int32(s) for s in range(plan.num_stages)]
        compiled(params, stages[0], y_hat, hyper, kernels[0]).block_until_ready()  # warm
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for s, kernel in zip(stages, kernels, strict=True):
                # The decoder needs each stage's parameters before the next stage.
                compiled(params, s, y_hat, hyper, kernel).block_until_ready()
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "schedule": name,
                "stages": plan.num_stages,
                "latent": latent,
                "median_s": float(np.median(times)),
                "min_s": float(np.min(times)),
                "compile_s": compile_s,
                "gflops_per_stage": _flops(compiled) / 1e9,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mscm_jax.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("stages", help="entropy-parameter time of all stages per schedule")
    p.add_argument("--schedules", nargs="+", default=["checkerboard", "mscm2x2", "mscm4x4", "serial"])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--channels", type=int, default=192, help="M")
    p.add_argument("--mixtures", type=int, default=3, help="K")
    p.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    machine = platform.processor() or platform.machine()
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform} ({machine}, {os.cpu_count()} cpus); "
        f"image {args.height}x{args.width}, M={args.channels}, K={args.mixtures}"
    )
    rows = bench_stages(args.schedules, args.height, args.width, args.channels, args.mixtures, args.repeats)
    base = next((r for r in rows if r["schedule"] == "checkerboard"), None)
    header = ("schedule", "stages", "median s", "min s", "vs cb", "GFLOP/stage", "compile s")
    print("{:<16}{:>7}{:>10}{:>9}{:>7}{:>13}{:>11}".format(*header))
    for r in rows:
        ratio = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
        print(
            f"{r['schedule']:<16}{r['stages']:>7}{r['median_s']:>10.4f}{r['min_s']:>9.4f}{ratio:>7}"
            f"{r['gflops_per_stage']:>13.4f}{r['compile_s']:>11.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
