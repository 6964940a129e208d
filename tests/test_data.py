import warnings

import numpy as np
import pytest
from PIL import Image

from mscm_jax import images
from mscm_jax.training.data import SAMPLE_SCENES, load_sample, read_image, to_rgb


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


def test_lossless_conversions_do_not_warn(tmp_path):
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6  # shown turned 90 degrees clockwise, as phones write portrait photos
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "grey_phone.png", exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "grey_phone.png").shape == (7, 5, 3)


# -- training sources and the loader -------------------------------------------

from mscm_jax.training.data import BatchLoader, FolderSource, SampleSource, open_sources, random_crop  # noqa: E402


def test_samples_split_by_scene():
    train, held = open_sources("samples", eval_scenes=("stereo_motorcycle",))
    assert held.names == ["stereo_motorcycle:left", "stereo_motorcycle:right"]
    assert not any(n.startswith("stereo_motorcycle") for n in train.names)
    train, _ = open_sources("samples", eval_scenes=("chelsea",), include_textures=True)
    assert {"grass", "gravel", "brick"} <= set(train.names)
    with pytest.raises(ValueError, match="unknown eval scene"):
        open_sources("samples", eval_scenes=("cat",))


def test_folder_source_recursive_skips_unreadable(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for i, sub in enumerate(["", "a", "a/b"]):
        Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(tmp_path / sub / f"img{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a" / "grey.jpg")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipping .*broken.png: not an image file that Pillow can read"):
        source = FolderSource(str(tmp_path))
    assert len(source) == 4 and source.load(0).shape[2] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable"):
        FolderSource(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        FolderSource(str(tmp_path / "missing"))


def test_tfds_source_with_mock_data_smaller_than_crop():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        train, held = open_sources("tfds:clic", tfds_split="train", tfds_eval_split="validation")
        image = train.load(0)
        assert image.shape[0] < 64 and image.shape[1] < 64  # mock clic images are tiny.
        loader = BatchLoader(train, global_batch=4, crop=64, seed=0, workers=2)
        batch = loader.batch(0)
        assert batch.shape == (4, 64, 64, 3) and 0 <= batch.min() and batch.max() <= 1
        assert len(held) > 0


def test_small_images_are_mirror_padded_to_the_crop():
    image = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(3, 2, 3)
    crop = random_crop(image, 8, np.random.default_rng(0))
    assert crop.shape == (8, 8, 3)
    assert set(np.unique(crop)) <= set(np.unique(image))


def test_loader_is_a_pure_function_of_seed_and_step():
    source = SampleSource(["astronaut", "coffee", "rocket"])
    a = BatchLoader(source, global_batch=4, crop=32, seed=3, workers=2)
    b = BatchLoader(source, global_batch=4, crop=32, seed=3, workers=1)
    np.testing.assert_array_equal(a.batch(7), b.batch(7))
    assert not np.array_equal(a.batch(7), a.batch(8))
    streamed = [batch for _, batch in a.iterate(5, 9)]
    np.testing.assert_array_equal(np.stack(streamed), np.stack([b.batch(s) for s in range(5, 9)]))
    # Two processes load disjoint halves of the same global batch.
    p0 = BatchLoader(source, 4, 32, 3, process_index=0, process_count=2).batch(7)
    p1 = BatchLoader(source, 4, 32, 3, process_index=1, process_count=2).batch(7)
    np.testing.assert_array_equal(np.concatenate([p0, p1]), a.batch(7))
    assert a.images_per_second > 0
