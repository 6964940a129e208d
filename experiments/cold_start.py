"""How long a new process takes to decode one file, against the warm in-process decode.

    python experiments/cold_start.py --model cheng2020-192      # random weights, N = M = 192
    python experiments/cold_start.py --model workdirs/quickstart

Codes one 512x768 photo, then times, on this machine:
- `import mscm_jax.cli` in a new process;
- `Codec.decompress` warm inside one process;
- `mscm-jax decompress FILE --model MODEL.mscm-model` in a new process, with
  a compilation cache that an earlier run of the same command filled; the
  import and the cold decode take turns.
The goal: cold <= import + 1 s + 3 x warm. Medians of `--repeats` runs, and
each turn's cold decode minus its import.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _wall(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cheng2020-192", help="cheng2020-192 or a workdir / model file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mscm-cold-")
    env = dict(os.environ, MSCM_JAX_CACHE_DIR=os.path.join(work, "cache"), MSCM_JAX_MODELS=work)

    import jax

    from mscm_jax.coding.codec import Codec
    from mscm_jax.model.compression_model import ModelConfig, init_model
    from mscm_jax.model.transforms import spread_latents
    from mscm_jax.tools.bench import _image_of_size, _spread_scales
    from mscm_jax.training.data import load_sample

    if args.model == "cheng2020-192":
        config = ModelConfig(
            transform="cheng2020-attn", N=192, M=192, num_mixtures=3, schedule="mscm4x4-paper"
        )
        _, params = init_model(config, jax.random.PRNGKey(0))
        codec = Codec(
            config, _spread_scales(spread_latents(params, config.transform, 40.0), 192, 3, 0.2, 8.0)
        )
    else:
        codec = Codec.load(args.model)
    model_file, encoded = os.path.join(work, "model.mscm-model"), os.path.join(work, "photo.mscm")
    codec.export(model_file)
    image = _image_of_size(load_sample("astronaut"), 512, 768)
    data = codec.compress(image).data
    with open(encoded, "wb") as f:
        f.write(data)
    codec.decompress(data)
    warm = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        codec.decompress(data)
        warm.append(time.perf_counter() - start)
    decode = [sys.executable, "-m", "mscm_jax.cli", "decompress", encoded, "--model", model_file, "-o",
              os.path.join(work, "out.png"), "--overwrite"]  # fmt: skip
    first = _wall(decode, env)  # fills the compilation cache
    # The import and the cold decode take turns, so that the machine's drift falls on both alike.
    imports, cold = [], []
    for _ in range(args.repeats):
        imports.append(_wall([sys.executable, "-c", "import mscm_jax.cli"], env))
        cold.append(_wall(decode, env))
    warm_s, import_s, cold_s = (float(np.median(v)) for v in (warm, imports, cold))
    bound = import_s + 1.0 + 3 * warm_s
    beyond = sorted(c - i for c, i in zip(cold, imports, strict=True))
    print(
        f"{args.model} ({codec.config.transform}, N=M={codec.config.N}, {codec.schedule.name}), 512x768, "
        f"{len(data)} bytes: import {import_s:.2f} s, warm decode {warm_s:.3f} s, cold decode {cold_s:.2f} s "
        f"(first run, filling the cache, {first:.1f} s); goal import + 1 + 3 x warm = {bound:.2f} s: "
        f"{'met' if cold_s <= bound else 'not met'}; cold minus the import before it, each turn: "
        f"{', '.join(f'{b:.2f}' for b in beyond)} s, against 1 + 3 x warm = {1 + 3 * warm_s:.2f} s"
    )


if __name__ == "__main__":
    main()
