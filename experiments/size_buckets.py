"""What size buckets save in compilation and cost in decoding time, on this backend.

    python experiments/size_buckets.py [--schedule mscm4x4-paper] [--steps 0 256]

One model (cheng2020-attn N = M = 192, K = 3, random weights with the
latents and scales spread as in `bench coding`) codes crops of several sizes
of one photo, in one process, once per size step (`Codec.with_size_step`; 0:
the programs of each size's own, 256: the default bucket). Per size and
step: the compilation a first `compress` of that size pays (every program
it and its decoder need), the warm entropy decoding (`Codec.decode_latent`,
networks and coder, the fastest of `--repeats`, the steps taking turns), and
whether every step wrote the same payload (the same stream: the stages'
parameters rounded alike on either latent; the headers differ by the step
they record). The sizes are ordered so that the
later ones share a bucket with earlier ones at step 256 and not at step 0.
"""

from __future__ import annotations

import argparse
import time

import jax

from mscm_jax.coding import bitstream
from mscm_jax.coding.codec import Codec
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.model.transforms import spread_latents
from mscm_jax.tools.bench import _image_of_size, _spread_scales
from mscm_jax.training.data import load_sample

SIZES = ((512, 768), (448, 704), (512, 704), (384, 640), (500, 700))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedule", default="mscm4x4-paper")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 256])
    parser.add_argument("--image", default="hubble_deep_field")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = ModelConfig(transform="cheng2020-attn", N=192, M=192, num_mixtures=3, schedule=args.schedule)
    _, params = init_model(config, jax.random.PRNGKey(0))
    params = _spread_scales(spread_latents(params, config.transform, 40.0), 192, 3, 0.2, 8.0)
    codecs = {step: Codec(config, params, size_step=step) for step in args.steps}
    photo = load_sample(args.image)
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}; {config.transform} N=M=192 K=3, "
          f"{args.schedule}; {args.image}; compile: a size's first compress; decode: entropy decoding, "
          f"fastest of {args.repeats}")  # fmt: skip
    header = ("size", "step", "bucket", "bpp", "compile s", "decode ms", "same payload")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 5, 9, 6, 10, 10, 12), strict=True)))
    for height, width in SIZES:
        image = _image_of_size(photo, height, width)
        files = {}
        for step, codec in codecs.items():
            files[step] = codec.compress(image)
            codec.decode_latent(files[step].data)  # compiled by compress: loads nothing more
        seconds = {step: [] for step in codecs}
        for _ in range(args.repeats):
            for step, codec in codecs.items():
                start = time.perf_counter()
                codec.decode_latent(files[step].data)
                seconds[step].append(time.perf_counter() - start)
        same = len({bitstream.unpack(result.data)[1] for result in files.values()}) == 1
        for step, codec in codecs.items():
            result = files[step]
            latent, _ = codec.family.latent_shapes(height, width)
            recorded = bitstream.unpack(result.data)[0].size_step
            bucket = "x".join(
                str(codec.family.latent_stride * side) for side in codec._bucket(latent, recorded)
            )
            print(f"{height:>4}x{width:<4} {step:>5} {bucket:>9} {result.bpp:>6.3f} "
                  f"{result.timings.compile:>10.2f} {1e3 * min(seconds[step]):>10.1f} {same!s:>12}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
