"""The integer path's products against float32, on the entropy-parameter network's shapes.

    python experiments/integer_products.py [--channels 192] [--repeats 20]

cheng2020-attn's network maps 4M -> 10M/3 -> 8M/3 -> 9M channels (K = 3);
a stage of mscm4x4-paper on a 768x512 image has 96 elements, one of
checkerboard 768. Each row times one product of E rows: float32 (the float
path), one int16 x int8 product into int32, and `ops.integer_dot` of int16
inputs (two int8 x int8 products, what the integer path runs for its int16
inputs; an int8 input is one such product). Medians, the variants taking turns.
"""

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.model.ops import integer_dot

DIMS = (((1,), (0,)), ((), ()))


def float32_dot(x, w):
    return jax.lax.dot_general(x, w, DIMS, preferred_element_type=jnp.float32)


def int16_dot(x, w):
    return jax.lax.dot_general(x.astype(jnp.int16), w, DIMS, preferred_element_type=jnp.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    m = args.channels
    widths = [4 * m, m * 10 // 3, m * 8 // 3, 9 * m]
    rng = np.random.default_rng(0)
    variants = {"float32": jax.jit(float32_dot), "int16 x int8": jax.jit(int16_dot),
                "integer_dot": jax.jit(integer_dot)}  # fmt: skip
    print(f"# jax {jax.__version__} on {jax.devices()[0].platform}; milliseconds, median of {args.repeats}")
    print(f"{'E':>5} {'I x O':>11} {'float32':>9} {'int16 x int8':>13} {'integer_dot':>12} {'ratio':>6}")
    for rows in (96, 768):
        for fan_in, fan_out in itertools.pairwise(widths):
            x = jnp.asarray(rng.integers(-32767, 32768, (rows, fan_in)), jnp.int32)
            w = jnp.asarray(rng.integers(-127, 128, (fan_in, fan_out)), jnp.int8)
            inputs = {"float32": (x.astype(jnp.float32), w.astype(jnp.float32))}
            exact = np.asarray(x, np.int64) @ np.asarray(w, np.int64)
            for name in ("int16 x int8", "integer_dot"):
                inputs[name] = (x, w)
                assert np.array_equal(np.asarray(variants[name](x, w)), exact), name
            jax.block_until_ready(variants["float32"](*inputs["float32"]))
            seconds = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    start = time.perf_counter()
                    jax.block_until_ready(fn(*inputs[name]))
                    seconds[name].append(time.perf_counter() - start)
            ms = {name: 1e3 * float(np.median(s)) for name, s in seconds.items()}
            print(
                f"{rows:>5} {f'{fan_in}x{fan_out}':>11} {ms['float32']:>9.2f} {ms['int16 x int8']:>13.2f} "
                f"{ms['integer_dot']:>12.2f} {ms['integer_dot'] / ms['float32']:>6.2f}"
            )


if __name__ == "__main__":
    main()
