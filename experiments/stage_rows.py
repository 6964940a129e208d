"""The entropy-parameter network on a stage's rows: 16 stages of 96 rows against 2 of 768.

    python experiments/stage_rows.py [--channels 192] [--repeats 40]
    taskset -c 0 python experiments/stage_rows.py     # the same on one core

A 768x512 image has a 48x32 latent: mscm4x4-paper decodes it in 16 stages
of 96 elements, checkerboard in 2 of 768. Both run the same products per
image, the context (12 taps of M channels to 2M, the average of both
schedules' stages here, so that only the row count differs) and the three
dense layers of cheng2020-attn's network (4M -> 10M/3 -> 8M/3 -> 9M, K = 3).
This times them, float32, one jit-compiled call per stage, schedules taking
turns; it prints the fastest of `--repeats` per image, wall and process CPU
time (all threads), and their ratio. What it shows is XLA's CPU products on
few rows, not the schedules' context work (4x4 has twice checkerboard's).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

TAPS = 12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    m = args.channels
    widths = (4 * m, 10 * m // 3, 8 * m // 3, 9 * m)
    rng = np.random.default_rng(0)

    def weight(rows: int, cols: int) -> jax.Array:
        return jnp.asarray(rng.normal(0, rows**-0.5, (rows, cols)).astype(np.float32))

    weights = (weight(TAPS * m, 2 * m), *(weight(a, b) for a, b in itertools.pairwise(widths)))

    @jax.jit
    def network(hyper, taps, context_w, *dense):
        h = jnp.concatenate([hyper, taps @ context_w], axis=-1)
        for i, w in enumerate(dense):
            h = h @ w if i == len(dense) - 1 else jax.nn.leaky_relu(h @ w)
        return h

    layouts = {"mscm4x4-paper": (16, 96), "checkerboard": (2, 768)}
    inputs = {}
    for name, (stages, rows) in layouts.items():
        hyper = [jnp.asarray(rng.normal(size=(rows, 2 * m)).astype(np.float32)) for _ in range(stages)]
        taps = [jnp.asarray(rng.normal(size=(rows, TAPS * m)).astype(np.float32)) for _ in range(stages)]
        inputs[name] = list(zip(hyper, taps, strict=True))
        jax.block_until_ready(network(*inputs[name][0], *weights))
    wall = {name: float("inf") for name in layouts}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for name, stages in inputs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for hyper, taps in stages:
                out = network(hyper, taps, *weights)
            jax.block_until_ready(out)
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform}, {len(os.sched_getaffinity(0))} cores "
        f"usable; M={m}, {TAPS} context taps per row; fastest of {args.repeats} per 1536 rows"
    )
    for name, (stages, rows) in layouts.items():
        print(f"{name:<14} {stages:>2} x {rows:>3} rows: wall {1e3 * wall[name]:6.1f} ms, "
              f"CPU {1e3 * cpu[name]:6.1f} ms")  # fmt: skip
    a, b = layouts
    print(f"{a} / {b}: wall {wall[a] / wall[b]:.2f}, CPU {cpu[a] / cpu[b]:.2f}")


if __name__ == "__main__":
    main()
