import numpy as np
import pytest
from PIL import Image

from mscm_jax.data import SAMPLE_SCENES, load_sample, read_image, to_rgb


def test_sample_scenes_keep_stereo_views_together():
    assert SAMPLE_SCENES["stereo_motorcycle"] == ("stereo_motorcycle:left", "stereo_motorcycle:right")
    assert "cat" not in SAMPLE_SCENES  # the same photo as chelsea
    left, right = load_sample("stereo_motorcycle:left"), load_sample("stereo_motorcycle:right")
    assert left.shape == right.shape == (500, 741, 3) and not np.array_equal(left, right)


def test_grey_texture_becomes_rgb():
    grass = load_sample("grass")
    assert grass.shape == (512, 512, 3) and np.array_equal(grass[..., 0], grass[..., 2])


def test_unknown_sample_lists_valid_names():
    with pytest.raises(ValueError, match="astronaut"):
        load_sample("lena")


def test_read_image_converts_with_notice(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(tmp_path / "a.png").shape == (5, 7, 3)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="8-bit"):
        to_rgb(np.zeros((2, 2, 3), np.uint16))
