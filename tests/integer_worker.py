"""Subprocess of test_integer_path's cross-ISA tests: encode or decode every (model, photo) pair.

    python integer_worker.py encode|decode ROOT ISA MODELS_JSON PHOTOS_JSON

encode writes ROOT/{model}-{photo}.{isa}.mscm and .npz (y_hat, decoded image);
decode reads the other ISA's files and writes ROOT/{model}-{photo}.{other}-by-{isa}.npz.
"""

import json
import sys
from pathlib import Path

import numpy as np

from mscm_jax.coding.codec import Codec, enable_compilation_cache
from mscm_jax.training.data import load_sample


def main(mode: str, root: str, isa: str, models: str, photos: str) -> None:
    enable_compilation_cache()
    root = Path(root)
    other = {"default": "sse4_2", "sse4_2": "default"}[isa]
    for model in json.loads(models):
        codec = Codec.load(model)
        for photo in json.loads(photos):
            stem = root / f"{Path(model).stem}-{photo}"
            if mode == "encode":
                result = codec.compress(load_sample(photo)[:160, :224])
                Path(f"{stem}.{isa}.mscm").write_bytes(result.data)
                decoded = codec.decompress(result.data)
                np.savez(f"{stem}.{isa}.npz", y_hat=result.y_hat, image=decoded.image)
            else:
                decoded = codec.decompress(Path(f"{stem}.{other}.mscm").read_bytes())
                np.savez(f"{stem}.{other}-by-{isa}.npz", y_hat=decoded.y_hat, image=decoded.image)


if __name__ == "__main__":
    main(*sys.argv[1:])
