"""Image files and arrays to uint8 RGB: every conversion named, nothing clipped, unknown ranges refused."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mscm_jax import images


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 128, 129, 257, 32767], [32896, 65406, 65407, 65534, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    image, notices = images.read_image(tmp_path / "g16.png")
    expected = np.array([[0, 0, 1, 1, 127], [128, 254, 255, 255, 255]], np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(image, np.repeat(expected[:, :, None], 3, axis=2))
    assert notices == (images.SIXTEEN_BIT_NOTICE, images.GREY_NOTICE)


UNKNOWN_RANGES = [
    (np.full((4, 5), 7.5, np.float32), "floating-point"),
    (np.full((4, 5), 70000, np.int32), "32-bit integer"),
]


@pytest.mark.parametrize(("array", "kind"), UNKNOWN_RANGES)
def test_pixels_of_unknown_range_are_refused(tmp_path, array, kind):
    Image.fromarray(array).save(tmp_path / "x.tiff")
    with pytest.raises(ValueError, match=rf"{kind} pixels .* give 8- or 16-bit pixels"):
        images.read_image(tmp_path / "x.tiff")


def test_files_that_are_not_images_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("not a PNG")
    with pytest.raises(ValueError, match=r"notes\.png: not an image file that Pillow can read"):
        images.read_image(tmp_path / "notes.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cannot read image .*cut.png: "):
        images.read_image(tmp_path / "cut.png")


def test_palette_and_alpha_images_are_converted_with_notices(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    image, notices = images.read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image[..., 0], grey)
    assert notices == ("Pillow mode P image converted to RGB",)
    Image.fromarray(np.stack([grey, grey[::-1]], axis=-1), "LA").save(tmp_path / "la.png")
    image, notices = images.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(image, np.repeat(grey[:, :, None], 3, axis=2))
    assert "alpha channel dropped" in notices[0] and notices[1] == images.GREY_NOTICE
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image, notices = images.read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image, rgb)
    assert notices == ()


def test_arrays_convert_or_are_refused():
    grey = np.zeros((3, 4), np.uint8)
    assert images.as_rgb_uint8(grey)[0].shape == (3, 4, 3)
    assert images.as_rgb_uint8(grey[:, :, None])[1] == (images.GREY_NOTICE,)
    rgba = np.zeros((3, 4, 4), np.uint8)
    assert images.as_rgb_uint8(rgba)[0].shape == (3, 4, 3)
    with pytest.raises(ValueError, match=r"8-bit image .* got uint16"):
        images.as_rgb_uint8(grey.astype(np.uint16))
    for shape in ((3, 4, 2), (0, 4), (0, 4, 3), (3,)):
        with pytest.raises(ValueError, match="expected a grayscale, RGB or RGBA image"):
            images.as_rgb_uint8(np.zeros(shape, np.uint8))
    for path in ("chelsea", Path("photo.png")):
        with pytest.raises(ValueError, match=r"got the path .* read it with mscm_jax\.load_image"):
            images.as_rgb_uint8(path)


@pytest.mark.parametrize(
    ("orientation", "upright"),
    [(2, np.fliplr), (3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, -1)), (8, np.rot90)],
)
def test_photos_are_turned_upright_as_their_exif_orientation_says(tmp_path, orientation, upright):
    stored = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    image, notices = images.read_image(tmp_path / "phone.png")
    np.testing.assert_array_equal(image, upright(stored))  # 6: shown turned 90 degrees clockwise
    assert notices == (images.UPRIGHT_NOTICE,)
    exif[images.EXIF_ORIENTATION] = 1
    Image.fromarray(stored).save(tmp_path / "as_stored.png", exif=exif)
    image, notices = images.read_image(tmp_path / "as_stored.png")
    np.testing.assert_array_equal(image, stored)
    assert notices == ()


def test_of_an_animation_the_first_frame_is_read_and_said(tmp_path):
    first = np.zeros((4, 6), np.uint8)
    frames = [Image.fromarray(first), Image.fromarray(first + 200)]
    frames[0].save(tmp_path / "two.gif", save_all=True, append_images=frames[1:])
    image, notices = images.read_image(tmp_path / "two.gif")
    np.testing.assert_array_equal(image, np.zeros((4, 6, 3), np.uint8))
    assert notices[0] == "the first of its 2 frames"


def test_damaged_exif_data_leaves_the_pixels_as_stored_and_is_said(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "plain.png")
    png = (tmp_path / "plain.png").read_bytes()
    payload = b"not EXIF at all"  # an eXIf chunk whose data is no TIFF header
    crc = struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + crc
    at = png.index(b"IDAT") - 4
    (tmp_path / "damaged.png").write_bytes(png[:at] + chunk + png[at:])
    image, notices = images.read_image(tmp_path / "damaged.png")
    np.testing.assert_array_equal(image, stored)
    assert len(notices) == 1 and notices[0].startswith("EXIF data unreadable (SyntaxError: not a TIFF file")
