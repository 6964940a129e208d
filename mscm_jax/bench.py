"""Benchmarks that print figures (speed goals live here, not in tests).

    python -m mscm_jax.bench stages [--height 512 --width 768 --channels 192]
    python -m mscm_jax.bench train-step [--schedules mscm4x4-paper checkerboard]

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


def bench_train_step(transform: str, schedule: str, channels: int, batch: int, crop: int, steps: int) -> dict:
    """Warm train-step time of one configuration, in this process."""
    import resource

    from mscm_jax.configs import base_config
    from mscm_jax.models import CompressionModel, ModelConfig
    from mscm_jax.train import init_state, make_train_step

    config = base_config()
    config.train.batch_size = batch
    model = CompressionModel(ModelConfig(transform=transform, N=channels, M=channels, schedule=schedule))
    state, tx = init_state(model, config.train, jax.random.PRNGKey(0), crop)
    step = jax.jit(make_train_step(model, tx, config.train), donate_argnums=0)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, crop, crop, 3)), jnp.float32)
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    state, metrics = step(state, x, key)
    jax.block_until_ready(metrics)
    compile_and_first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, x, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {
        "schedule": schedule,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        "first_step_s": compile_and_first,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


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
    p = sub.add_parser("train-step", help="train-step throughput and peak host memory per schedule")
    p.add_argument("--schedules", nargs="+", default=["mscm4x4-paper", "checkerboard"])
    p.add_argument("--transform", default="cheng2020-attn")
    p.add_argument("--channels", type=int, default=192, help="N = M")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bench == "train-step":
        return _train_step_main(args)

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


def _train_step_main(args: argparse.Namespace) -> int:
    """Each schedule in its own process, so that peak memory is its own."""
    import json
    import subprocess
    import sys

    if args.in_process:
        row = bench_train_step(
            args.transform, args.schedules[0], args.channels, args.batch, args.crop, args.steps
        )
        print(json.dumps(row))
        return 0
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus); {args.transform}, "
        f"N=M={args.channels}, batch {args.batch}, {args.crop}x{args.crop}, median of {args.steps} warm steps"
    )
    header = ("schedule", "step s", "images/s", "first step s", "peak RSS GiB")
    print("{:<16}{:>9}{:>10}{:>14}{:>14}".format(*header))
    for schedule in args.schedules:
        cmd = [sys.executable, "-m", "mscm_jax.bench", "train-step", "--in-process", "--schedules", schedule,
               "--transform", args.transform, "--channels", str(args.channels), "--batch", str(args.batch),
               "--crop", str(args.crop), "--steps", str(args.steps)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['schedule']:<16}{r['step_s']:>9.2f}{r['images_per_s']:>10.2f}"
            f"{r['first_step_s']:>14.1f}{r['peak_rss_gib']:>14.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
