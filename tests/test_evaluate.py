"""Evaluation by real coding: JSON layout, agreement with the codec, MS-SSIM null for small images."""

import json

import numpy as np
import pytest
from PIL import Image

from mscm_jax.cli import main
from mscm_jax.coding.codec import Codec
from mscm_jax.tools import evaluate
from mscm_jax.tools.metrics import rgb_metrics
from mscm_jax.training.data import load_sample


@pytest.fixture(scope="module")
def crop_dir(tmp_path_factory):
    """Two small crops (under 161 px: MS-SSIM undefined), of two sizes, as PNG files."""
    folder = tmp_path_factory.mktemp("crops")
    image = load_sample("chelsea")
    Image.fromarray(image[40:104, 60:156]).save(folder / "a.png")  # 64x96
    Image.fromarray(image[100:180, 200:280]).save(folder / "b.png")  # 80x80
    return folder


@pytest.fixture(scope="module")
def codec(trained_workdir):
    return Codec.load(trained_workdir)


def test_images_are_a_folder_or_one_file(crop_dir):
    folder = evaluate.load_images(str(crop_dir))
    [(name, image)] = evaluate.load_images(str(crop_dir / "b.png"))
    assert name == "b.png" and np.array_equal(image, folder[1][1])
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        evaluate.load_images(str(crop_dir / "c.png"))


def test_numbers_agree_with_the_codec(codec, crop_dir):
    images = evaluate.load_images(str(crop_dir))
    assert [n for n, _ in images] == ["a.png", "b.png"]
    result = evaluate.evaluate_codec(codec, images, "m")
    for (name, image), row in zip(images, result.images, strict=True):
        encoded = codec.compress(image)
        decoded = codec.decompress(encoded.data)
        assert row.name == name and (row.height, row.width) == image.shape[:2]
        assert row.bytes == len(encoded.data)  # the coder is deterministic
        assert row.bpp == pytest.approx(8 * len(encoded.data) / image[..., 0].size, rel=0, abs=1e-12)
        assert row.payload_bpp == pytest.approx(encoded.payload_bpp, abs=1e-12)
        assert row.payload_bpp < row.bpp
        assert row.stream_bits == tuple(round(b) for b in encoded.stage_bits)
        assert len(row.stream_bits) == codec.schedule.num_stages
        assert row.psnr == pytest.approx(rgb_metrics(image, decoded.image)["psnr-rgb"], abs=1e-9)
        assert row.ms_ssim is None  # under 161 px a side
        assert row.decoding_time == pytest.approx(row.entropy_decoding_time + row.synthesis_time, abs=1e-9)
        assert min(row.encoding_time, row.entropy_decoding_time, row.synthesis_time) > 0
    assert result.mean("bpp") == pytest.approx(np.mean([r.bpp for r in result.images]))
    assert result.mean("ms_ssim") is None
    assert result.compile_time >= 0


def test_json_layout_and_ms_ssim(codec, crop_dir, tmp_path):
    small = evaluate.evaluate_codec(codec, evaluate.load_images(str(crop_dir), max_images=1), "small")
    # A 300x451 photo: MS-SSIM defined.
    large = evaluate.evaluate_codec(codec, evaluate.load_images("samples:chelsea"), "large")
    assert 0 < large.images[0].ms_ssim <= 1
    data = evaluate.write_results_json([small, large], tmp_path / "r.json", name="curve")
    assert json.loads((tmp_path / "r.json").read_text()) == data
    assert data["name"] == "curve" and "real coding" in data["description"]
    results = data["results"]
    for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time",  # CompressAI's
                "payload_bpp", "entropy_decoding_time", "synthesis_time", "compile_time"):  # fmt: skip
        assert len(results[key]) == 2, key  # one entry per model: the points of one curve
    assert results["ms-ssim-rgb"][0] is None and results["ms-ssim-rgb"][1] == large.images[0].ms_ssim
    assert results["bpp"] == [small.mean("bpp"), large.mean("bpp")]
    assert {"bpp", "payload_bpp", "averages", "times"} <= set(data["conventions"])
    assert [m["model"] for m in data["models"]] == ["small", "large"]
    row = data["models"][1]["images"][0]
    assert row["name"] == "chelsea" and row["ms_ssim"] == large.images[0].ms_ssim


def test_cli(trained_workdir, crop_dir, tmp_path, capsys):
    out = tmp_path / "cli.json"
    args = ["evaluate", "--model", str(trained_workdir), "--model", str(trained_workdir),
            "--images", str(crop_dir), "--max-images", "1", "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert len(data["results"]["bpp"]) == 2 and data["results"]["bpp"][0] == data["results"]["bpp"][1]
    assert "null" in capsys.readouterr().out  # MS-SSIM of the small crop
    # An existing results file is kept, and refused before anything is evaluated.
    before = out.read_text()
    assert main([*args[:-1], "--images", "samples:nope"]) == 2
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == before


def test_a_file_that_fails_to_decode_is_skipped_not_replaced(tmp_path):
    image = load_sample("chelsea")[:48, :64]
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=90)
    whole = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(whole[:-64])  # its header reads; its last pixels are missing
    Image.fromarray(image[::-1]).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match="b.jpg: image file is truncated.*: skipped"):
        loaded = evaluate.load_images(str(tmp_path))
    assert [name for name, _ in loaded] == ["a.jpg", "c.png"]
    assert np.array_equal(loaded[1][1], image[::-1])
    with pytest.warns(UserWarning, match="skipped"):
        assert [name for name, _ in evaluate.load_images(str(tmp_path), max_images=2)] == ["a.jpg", "c.png"]
    (tmp_path / "a.jpg").write_bytes(whole[:-64])
    (tmp_path / "c.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"none of its images .*\(2 tried\)"):
        evaluate.load_images(str(tmp_path))


def test_image_specs(tmp_path):
    assert [n for n, _ in evaluate.load_images("samples:stereo_motorcycle")] == [
        "stereo_motorcycle:left", "stereo_motorcycle:right"]  # fmt: skip
    assert len(evaluate.load_images("samples", max_images=2)) == 2
    with pytest.raises(ValueError, match="unknown sample scenes"):
        evaluate.load_images("samples:nope")
    with pytest.raises(FileNotFoundError):
        evaluate.load_images(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no readable"):
        evaluate.load_images(str(tmp_path))
