"""Peak memory and time of the analysis and synthesis, whole and window by window (`model.tiling`).

    python experiments/transform_memory.py                              # 4000x3000, cheng2020-attn 192
    python experiments/transform_memory.py --size 2160x3840 --tile-pixels 0 4194304

Each setting runs in two new processes, one compressing and one decompressing,
so that each peak resident memory is that of one direction. Random weights,
latents spread as a trained model's (`tools.bench`); times exclude compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile


def child(args: argparse.Namespace) -> None:
    import jax

    from mscm_jax.coding.codec import Codec
    from mscm_jax.model.compression_model import ModelConfig, init_model
    from mscm_jax.model.transforms import spread_latents
    from mscm_jax.tools.bench import _image_of_size, _spread_scales
    from mscm_jax.training.data import load_sample

    config = ModelConfig(transform=args.transform, N=args.channels, M=args.channels, num_mixtures=3,
                         schedule="mscm4x4-paper")  # fmt: skip
    _, params = init_model(config, jax.random.PRNGKey(0))
    params = _spread_scales(spread_latents(params, config.transform, 40.0), args.channels, 3, 0.2, 8.0)
    codec = Codec(config, params, tile_pixels=args.child_tile)
    if args.child == "compress":
        height, width = map(int, args.size.split("x"))
        result = codec.compress(_image_of_size(load_sample("astronaut"), height, width))
        with open(args.file, "wb") as f:
            f.write(result.data)
        seconds = result.timings.analysis
    else:
        with open(args.file, "rb") as f:
            seconds = codec.decompress(f.read()).timings.synthesis
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="3000x4000", help="HEIGHTxWIDTH")
    parser.add_argument("--transform", default="cheng2020-attn")
    parser.add_argument("--channels", type=int, default=192, help="N = M")
    parser.add_argument("--tile-pixels", type=int, nargs="+", default=[0, 2**23])
    parser.add_argument("--child", choices=("compress", "decompress"), help=argparse.SUPPRESS)
    parser.add_argument("--child-tile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"{args.transform} N = M = {args.channels}, {args.size} (height x width), "
          f"{os.cpu_count()} CPUs; peak resident memory of the process")  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        for tile in args.tile_pixels:
            figures = {}
            for direction in ("compress", "decompress"):
                command = [sys.executable, __file__, "--size", args.size, "--transform", args.transform,
                           "--channels", str(args.channels), "--child", direction, "--child-tile", str(tile),
                           "--file", os.path.join(work, f"{tile}.mscm")]  # fmt: skip
                run = subprocess.run(command, capture_output=True, text=True, check=False)
                if run.returncode != 0:
                    sys.exit(f"{direction} with --tile-pixels {tile} failed:\n{run.stderr[-3000:]}")
                figures[direction] = json.loads(run.stdout.strip().splitlines()[-1])
            a, s = figures["compress"], figures["decompress"]
            print(f"tile_pixels {tile:>9}: analysis {a['seconds']:7.2f} s, compress peak "
                  f"{a['peak_bytes'] / 2**30:5.2f} GiB; synthesis {s['seconds']:7.2f} s, decompress peak "
                  f"{s['peak_bytes'] / 2**30:5.2f} GiB", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
