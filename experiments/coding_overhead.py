"""Where a file's bytes go: the ideal under the integer models, each source of overhead, the estimate.

    python experiments/coding_overhead.py --model workdirs/quickstart

For a 512x768 and a 3840x2160 crop of a sample photo (enlarged when smaller):
payload bytes against the information content of its symbols under the
integer models (`CompressResult.ideal_bits`), split into what the lanes cost
(`lane_bits`: 48 - log2 of each final state, of the 32 bits each writes), the
escapes' payload bits (inside the ideal) and the coder's rounding (the rest,
either sign); and the payload against the model's own estimate (its float
likelihoods, Mode.EVAL). `--lanes L` writes L lanes instead of the default.
"""

from __future__ import annotations

import argparse

import numpy as np

from mscm_jax.coding.codec import Codec
from mscm_jax.tools.bench import _image_of_size
from mscm_jax.training.data import load_sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="workdirs/quickstart")
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--lanes", type=int, default=None, help="default: rans.choose_lanes")
    args = parser.parse_args()
    codec = Codec.load(args.model).with_lanes(args.lanes)
    for height, width in ((512, 768), (2160, 3840)):
        image = _image_of_size(load_sample(args.image), height, width)
        result = codec.compress(image)
        estimate = float(codec.estimate(image.astype(np.float32) / 255.0).bpp[0]) * height * width / 8
        ideal = result.ideal_bits / 8
        print(
            f"{width}x{height}: {result.bpp:.3f} bpp; payload {result.payload_bytes} B = "
            f"{result.payload_bytes / ideal:.5f} x ideal {ideal:.0f} B + {result.lanes} lanes "
            f"{result.lane_bits / 8:.0f} B (of the {result.flush_bytes} B they write) + coder rounding "
            f"{result.rounding_bits / 8:+.0f} B; of the ideal, {result.escapes} escapes "
            f"{result.escape_bits / 8:.0f} B; header {result.header_bytes} B; payload / model estimate "
            f"{result.payload_bytes / estimate:.4f} ({estimate:.0f} B)"
        )


if __name__ == "__main__":
    main()
