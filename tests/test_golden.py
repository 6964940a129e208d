"""Golden files: committed models and `.mscm` files whose bytes, latents and pixels must not change.

Each folder of tests/golden holds what one mscm-jax version wrote: 0.2.0's
integer path reads int16 activations, 0.3.0's reads int8 codes around zero
points. An unintended change of the file format, the coder, the integer
coding model or either integer path's numerics fails here loudly. For an
intended one, write a new folder with `python tests/golden/make_golden.py`
and say why in the commit. The models code with their integer paths
(coder 5), so decoding is exact on every backend; the synthesis is float, so
pixels may differ by one level on another platform, and the encoder's float
analysis could round a latent differently there.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mscm_jax.coding import bitstream
from mscm_jax.coding.codec import Codec

GOLDEN = Path(__file__).parent / "golden"
VERSIONS = ["0.2.0", "0.3.0", "0.3.16"]  # 0.3.16: format 3, which records the size step


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_file_decodes_to_the_stored_latent_and_pixels(version):
    codec = Codec.load(GOLDEN / version / "model.mscm-model")
    data = (GOLDEN / version / "photo.mscm").read_bytes()
    assert bitstream.unpack(data)[0].coder == bitstream.CODER_RANS_INTEGER
    decoded = codec.decompress(data)
    np.testing.assert_array_equal(decoded.y_hat, np.load(GOLDEN / version / "y_hat.npy"))
    expected = np.asarray(Image.open(GOLDEN / version / "decoded.png")).astype(int)
    assert np.abs(decoded.image.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_photo_encodes_to_the_stored_bytes(version):
    """The newest folder's file byte for byte; earlier formats' the same stream and header fields."""
    codec = Codec.load(GOLDEN / version / "model.mscm-model")
    encoded = codec.compress(np.asarray(Image.open(GOLDEN / "photo.png"))).data
    stored = (GOLDEN / version / "photo.mscm").read_bytes()
    (header, payload), earlier = bitstream.unpack(encoded), bitstream.unpack(stored)[0].version
    if earlier < bitstream.FORMAT_VERSION:  # coded on the image's own latent, not recorded
        encoded = bitstream.pack(dataclasses.replace(header, version=earlier, size_step=0), payload)
    assert encoded == stored, (
        f"the golden photo no longer encodes to tests/golden/{version}/photo.mscm: the format or the "
        "numerics changed"
    )
