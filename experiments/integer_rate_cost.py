"""Rate cost of the integer entropy-parameter path against the float path, per image and in total.

    python experiments/integer_rate_cost.py --model workdirs/quickstart --name quickstart
    python experiments/integer_rate_cost.py --random cheng2020-attn:192:mscm4x4-paper --name paper-4x4

Codes every built-in sample photo with the float path (coder 4) and with the
post-training integer path (coder 5, calibrated on `--calibration-images`
centre crops of the first sample scenes), and prints a Markdown table of
ideal bits (the information content under each path's integer models) and
payload bytes. Writes the rows as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from mscm_jax.coding.codec import Codec
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.model.transforms import spread_latents
from mscm_jax.training.data import SAMPLE_SCENES, calibration_images, load_sample


def random_codec(spec: str, latent_scale: float) -> Codec:
    """TRANSFORM:CHANNELS:SCHEDULE with random weights, the analysis output scaled (as `bench coding`)."""
    transform, channels, schedule = spec.split(":")
    config = ModelConfig(transform=transform, N=int(channels), M=int(channels), schedule=schedule)
    _, params = init_model(config, jax.random.PRNGKey(0))
    return Codec(config, spread_latents(params, transform, latent_scale))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a training workdir or .mscm-model file")
    source.add_argument("--random", help="TRANSFORM:CHANNELS:SCHEDULE, random weights")
    parser.add_argument("--latent-scale", type=float, default=40.0)
    parser.add_argument("--name", default="model")
    parser.add_argument("--calibration-images", type=int, default=4)
    parser.add_argument("--max-side", type=int, default=768, help="centre crop of at most this many pixels")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    float_codec = Codec.load(args.model) if args.model else random_codec(args.random, args.latent_scale)
    calibration = calibration_images("samples", args.calibration_images)
    integer_codec = float_codec.with_integer_path(calibration)
    calibrated = [views[0] for views in SAMPLE_SCENES.values()][: args.calibration_images]
    c = float_codec.config
    print(f"# {args.name}: {c.transform} N={c.N} M={c.M} K={c.num_mixtures} {c.schedule}; integer path "
          f"calibrated on 512-pixel centre crops of {', '.join(calibrated)} (*)")  # fmt: skip
    print("| image | size | float bits | integer bits | cost | float payload B | integer payload B |")
    print("|---|---|---:|---:|---:|---:|---:|")
    rows, totals = [], np.zeros(4)
    for views in SAMPLE_SCENES.values():
        name = views[0]
        image = load_sample(name)[: args.max_side, : args.max_side]
        results = [codec.compress(image) for codec in (float_codec, integer_codec)]
        for codec, result in zip((float_codec, integer_codec), results, strict=True):
            np.testing.assert_array_equal(codec.decompress(result.data).y_hat, result.y_hat)
        bits = [r.ideal_bits for r in results]
        payload = [r.payload_bytes for r in results]
        totals += [*bits, *payload]
        mark = " *" if name in calibrated else ""
        size = f"{image.shape[1]}x{image.shape[0]}"
        cost = 100 * (bits[1] / bits[0] - 1)
        print(f"| {name}{mark} | {size} | {bits[0]:.0f} | {bits[1]:.0f} | {cost:+.3f} % | {payload[0]} "
              f"| {payload[1]} |")  # fmt: skip
        rows.append({"image": name, "size": size, "calibration": bool(mark), "float_bits": bits[0],
                     "integer_bits": bits[1], "float_payload_bytes": payload[0],
                     "integer_payload_bytes": payload[1]})  # fmt: skip
    print(f"| total | | {totals[0]:.0f} | {totals[1]:.0f} | {100 * (totals[1] / totals[0] - 1):+.3f} % "
          f"| {totals[2]:.0f} | {totals[3]:.0f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"name": args.name, "config": c.to_dict(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
