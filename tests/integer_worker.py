"""Subprocess of test_integer_path's cross-ISA tests: one instruction set's side of the exchange.

    python integer_worker.py ROOT ISA OTHER MODELS_JSON PHOTOS_JSON

For every (model, photo) pair it encodes the photo's crop to ROOT/{model}-{photo}.{ISA}.mscm
and .npz (y_hat, decoded image), then decodes the OTHER instruction set's file to
ROOT/{model}-{photo}.{OTHER}-by-{ISA}.npz. The test process is the other side.
"""

import json
import sys
from pathlib import Path

import numpy as np

from mscm_jax.coding.codec import Codec
from mscm_jax.coding.programs import enable_compilation_cache
from mscm_jax.training.data import load_sample

CROP = (slice(0, 100), slice(0, 140))  # test_integer_path.PHOTO's


def encode(codec: Codec, photo: str, stem: Path, isa: str) -> None:
    result = codec.compress(load_sample(photo)[CROP])
    Path(f"{stem}.{isa}.mscm").write_bytes(result.data)
    decoded = codec.decompress(result.data)
    np.savez(f"{stem}.{isa}.npz", y_hat=result.y_hat, image=decoded.image)


def decode(codec: Codec, stem: Path, isa: str, other: str) -> None:
    decoded = codec.decompress(Path(f"{stem}.{other}.mscm").read_bytes())
    np.savez(f"{stem}.{other}-by-{isa}.npz", y_hat=decoded.y_hat, image=decoded.image)


def main(root: str, isa: str, other: str, models: str, photos: str) -> None:
    enable_compilation_cache()
    for model in json.loads(models):
        codec = Codec.load(model)
        for photo in json.loads(photos):
            stem = Path(root) / f"{Path(model).stem}-{photo}"
            encode(codec, photo, stem, isa)
            decode(codec, stem, isa, other)


if __name__ == "__main__":
    main(*sys.argv[1:])
