"""Where a file's bytes go: the ideal under the integer models, each source of overhead, the estimate.

    python experiments/coding_overhead.py --model workdirs/quickstart

For a 512x768 and a 3840x2160 crop of a sample photo (enlarged when smaller):
payload bytes against the information content of its symbols under the
integer models (`CompressResult.ideal_bits`), split into the lanes' flush,
the escapes' payload bits (inside the ideal) and the coder's rounding; and the
payload against the model's own estimate (its float likelihoods, Mode.EVAL).
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
    args = parser.parse_args()
    codec = Codec.load(args.model)
    for height, width in ((512, 768), (2160, 3840)):
        image = _image_of_size(load_sample(args.image), height, width)
        result = codec.compress(image)
        estimate = float(codec.estimate(image.astype(np.float32) / 255.0).bpp[0]) * height * width / 8
        ideal = result.ideal_bits / 8
        rounding = result.payload_bytes - result.flush_bytes - ideal
        print(
            f"{width}x{height}: {result.bpp:.3f} bpp; payload {result.payload_bytes} B = "
            f"{result.payload_bytes / ideal:.5f} x ideal {ideal:.0f} B (flush {result.flush_bytes} B for "
            f"{result.lanes} lanes, coder rounding {rounding:+.0f} B; of the ideal, {result.escapes} escapes "
            f"{result.escape_bits / 8:.0f} B); header {result.header_bytes} B; payload / model estimate "
            f"{result.payload_bytes / estimate:.4f} ({estimate:.0f} B)"
        )


if __name__ == "__main__":
    main()
