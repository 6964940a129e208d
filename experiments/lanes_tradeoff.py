"""What rANS lanes cost in bytes and buy in decoding speed, on this backend.

    python experiments/lanes_tradeoff.py --model workdirs/quickstart

For a 512x768 and a 3840x2160 crop of a sample photo (enlarged when smaller),
the same model writes files of 1, 2, 4, ... lanes. Per lane count: the
payload against the ideal under the integer models, what the lanes cost
(`CompressResult.lane_bits`), the coder's loop steps (symbols / lanes; each
segment's last step, z's and every stage's, may be partial) and entropy
decoding's time (`Codec.decode_latent`, networks included, fastest of
`--repeats`, the lane counts taking turns), beside the default choice
(`rans.choose_lanes`). The decoder runs one loop step per `lanes` symbols,
one after another: few lanes pay a step's fixed cost (its operations
dispatched one by one) many times, many lanes pay for their bytes.
"""

from __future__ import annotations

import argparse
import time

import jax

from mscm_jax.coding.codec import Codec
from mscm_jax.tools.bench import _image_of_size
from mscm_jax.training.data import load_sample

SIZES = {"512x768": (512, 768), "3840x2160": (2160, 3840)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="workdirs/quickstart")
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--lanes", nargs="+", type=int, default=[2**i for i in range(11)])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    codec = Codec.load(args.model).with_size_step(0)  # times of the image's own latent, no bucket
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}; model {args.model}; {args.image}")
    for size in args.sizes:
        image = _image_of_size(load_sample(args.image), *SIZES[size])
        default = codec.compress(image)
        symbols = codec._layout(codec.family.latent_shapes(*image.shape[:2])[0], 0).num_symbols
        files = {lanes: codec.with_lanes(lanes).compress(image) for lanes in sorted(set(args.lanes))}
        seconds = {lanes: [] for lanes in files}
        for result in files.values():  # compiles each lane count's programs
            codec.decode_latent(result.data)
        for _ in range(args.repeats):
            for lanes, result in files.items():
                start = time.perf_counter()
                codec.decode_latent(result.data)
                seconds[lanes].append(time.perf_counter() - start)
        ideal = default.ideal_bits / 8
        print(
            f"{size}: {default.bpp:.3f} bpp, ideal {ideal:.0f} B; {symbols} symbols; "
            f"default {default.lanes} lanes"
        )
        print(f"{'lanes':>6}{'payload/ideal':>15}{'lane B':>8}{'steps':>9}{'decode s':>10}")
        for lanes, result in files.items():
            print(
                f"{lanes:>6}{result.payload_bytes / (result.ideal_bits / 8):>15.5f}"
                f"{result.lane_bits / 8:>8.0f}{-(-symbols // lanes):>9}{min(seconds[lanes]):>10.3f}"
            )


if __name__ == "__main__":
    main()
