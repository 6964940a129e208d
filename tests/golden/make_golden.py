"""Writes the golden files of tests/test_golden.py; run it only for an intended format change.

    python tests/golden/make_golden.py

Into tests/golden/<mscm-jax version>/: a small model (mbt2018, N = M = 8,
mscm2x2, random weights with the analysis output scaled, integer path
calibrated on one photo), the `.mscm` file of tests/golden/photo.png (a 64x96
crop), the decoded latent and the decoded image. The folders of earlier
versions stay: their files must keep decoding.
"""

from pathlib import Path

import jax
import numpy as np
from PIL import Image

from mscm_jax import __version__
from mscm_jax.coding.codec import Codec
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.model.transforms import spread_latents
from mscm_jax.training.data import load_sample

HERE = Path(__file__).parent


def main() -> None:
    config = ModelConfig(transform="mbt2018", N=8, M=8, num_mixtures=3, schedule="mscm2x2")
    _, params = init_model(config, jax.random.PRNGKey(7))
    codec = Codec(config, spread_latents(params, "mbt2018", 40.0))
    codec = codec.with_integer_path([load_sample("astronaut")[:128, :128]])
    out = HERE / __version__
    out.mkdir(exist_ok=True)
    codec.export(out / "model.mscm-model")
    image = load_sample("chelsea")[100:164, 150:246]
    if not (HERE / "photo.png").exists():
        Image.fromarray(image).save(HERE / "photo.png")
    encoded = codec.compress(image)
    (out / "photo.mscm").write_bytes(encoded.data)
    decoded = codec.decompress(encoded.data)
    np.save(out / "y_hat.npy", decoded.y_hat)
    Image.fromarray(decoded.image).save(out / "decoded.png")
    print(f"model {codec.fingerprint[:16]}, file {len(encoded.data)} bytes")


if __name__ == "__main__":
    main()
