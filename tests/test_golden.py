"""Golden files: a committed model, photo and `.mscm` file whose bytes, latent and pixels must not change.

An unintended change of the file format, the coder, the integer coding model
or the integer path's numerics fails here loudly. For an intended one,
regenerate them with `python tests/golden/make_golden.py` and say why in the
commit. The model codes with its integer path (coder 5), so decoding is exact
on every backend; the synthesis is float, so pixels may differ by one level
on another platform, and the encoder's float analysis could round a latent
differently there.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from mscm_jax.coding import bitstream
from mscm_jax.coding.codec import Codec

GOLDEN = Path(__file__).parent / "golden"


def test_golden_file_decodes_to_the_stored_latent_and_pixels():
    codec = Codec.load(GOLDEN / "model.mscm-model")
    data = (GOLDEN / "photo.mscm").read_bytes()
    assert bitstream.unpack(data)[0].coder == bitstream.CODER_RANS_INTEGER
    decoded = codec.decompress(data)
    np.testing.assert_array_equal(decoded.y_hat, np.load(GOLDEN / "y_hat.npy"))
    expected = np.asarray(Image.open(GOLDEN / "decoded.png")).astype(int)
    assert np.abs(decoded.image.astype(int) - expected).max() <= 1


def test_golden_photo_encodes_to_the_stored_bytes():
    codec = Codec.load(GOLDEN / "model.mscm-model")
    encoded = codec.compress(np.asarray(Image.open(GOLDEN / "photo.png")))
    assert encoded.data == (GOLDEN / "photo.mscm").read_bytes(), (
        "the golden photo no longer encodes to tests/golden/photo.mscm: the format or the numerics changed"
    )
