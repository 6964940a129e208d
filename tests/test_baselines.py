"""Classical baselines (Pillow) in the evaluation layout, RD plots and BD-rates, quickstart comparison."""

import dataclasses
import io
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import untrained_workdir
from PIL import Image

from mscm_jax.cli import main
from mscm_jax.tools import baselines, evaluate
from mscm_jax.tools.bd_rate import bd_rate
from mscm_jax.tools.metrics import rgb_metrics
from mscm_jax.tools.plot import load_curve, ms_ssim_db
from mscm_jax.training.configs import load_config
from mscm_jax.training.data import load_sample

TINY = str(Path(__file__).parent / "configs" / "tiny.py")
QUICKSTART = str(Path(__file__).parent.parent / "launch" / "quickstart.py")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two small crops (MS-SSIM undefined) and one of 176x176 (defined), as PNG files."""
    folder = tmp_path_factory.mktemp("images")
    photo = load_sample("chelsea")
    Image.fromarray(photo[40:104, 60:156]).save(folder / "a.png")  # 64x96
    Image.fromarray(photo[100:180, 200:280]).save(folder / "b.png")  # 80x80
    Image.fromarray(photo[60:236, 150:326]).save(folder / "c.png")  # 176x176
    return folder


def _pillow_bytes(image, fmt, quality):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()


def _fake_model_result() -> evaluate.ModelResult:
    image = evaluate.ImageResult(
        name="x", height=8, width=8, bytes=10, bpp=1.25, payload_bpp=1.0, header_bytes=2, z_bits=16,
        stream_bits=(48, 16), psnr=30.0, ms_ssim=None, encoding_time=0.1, decoding_time=0.2,
        entropy_decoding_time=0.15, synthesis_time=0.05, compile_time=1.0,
    )  # fmt: skip
    return evaluate.ModelResult("m", "mscm2x2", "d", 1, "f" * 64, 1.0, (image,))


def test_webp_points_are_real_pillow_bytes_in_the_evaluation_layout(image_dir, tmp_path):
    images = evaluate.load_images(str(image_dir))
    qualities = (20, 60, 90)
    results = baselines.evaluate_baseline("webp", images, qualities, progress=False)
    assert [r.model for r in results] == ["webp q=20", "webp q=60", "webp q=90"]
    for quality, result in zip(qualities, results, strict=True):
        for (name, image), row in zip(images, result.images, strict=True):
            data = _pillow_bytes(image, "WEBP", quality)
            assert row.name == name and row.bytes == len(data)
            assert row.bpp == 8 * len(data) / (image.shape[0] * image.shape[1])
            decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            assert row.psnr == rgb_metrics(image, decoded)["psnr-rgb"]
            assert row.ms_ssim == rgb_metrics(image, decoded)["ms-ssim-rgb"]
        assert result.images[0].ms_ssim is None and 0 < result.images[2].ms_ssim < 1
    bpps = [r.mean("bpp") for r in results]
    assert bpps == sorted(bpps) and [r.mean("psnr") for r in results] == sorted(
        r.mean("psnr") for r in results
    )
    data = evaluate.write_results_json(results, tmp_path / "webp.json", name="WebP",
                                       conventions=baselines.BASELINE_CONVENTIONS)  # fmt: skip
    # The same layout as our models' JSON, key for key.
    ours = evaluate.results_dict([_fake_model_result()])
    assert data.keys() == ours.keys() and data["results"].keys() == ours["results"].keys()
    assert data["models"][0].keys() == ours["models"][0].keys()
    assert data["models"][0]["images"][0].keys() == ours["models"][0]["images"][0].keys()
    assert data["results"]["bpp"] == bpps and len(data["results"]["psnr-rgb"]) == 3
    assert data["results"]["entropy_decoding_time"] == [None] * 3  # does not apply, not 0
    assert data["results"]["ms-ssim-rgb"][0] == results[0].images[2].ms_ssim  # mean where defined
    assert "Pillow" in data["conventions"]["bpp"]


def test_a_codec_this_pillow_cannot_write_is_one_line(image_dir, monkeypatch, capsys):
    assert "jpeg" in baselines.available_codecs()
    real = baselines._probe
    monkeypatch.setattr(baselines, "_probe", lambda fmt: "KeyError: 'AVIF'" if fmt == "AVIF" else real(fmt))
    assert "avif" not in baselines.available_codecs()
    assert main(["evaluate", "--codec", "avif", "--images", str(image_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write AVIF" in err and "available here: jpeg" in err
    assert main(["evaluate", "--images", str(image_dir)]) == 2  # neither --model nor --codec
    assert "--model" in capsys.readouterr().err
    with pytest.raises(baselines.BaselineError, match=r"0\.\.100"):
        baselines.evaluate_baseline("jpeg", [], qualities=(101,))


@pytest.mark.filterwarnings("ignore:Insufficient curve overlap")  # the test's own bd_rate calls
def test_cli_evaluate_codec_then_plot_with_bd_rates(image_dir, tmp_path, capsys):
    files = {}
    for codec in ("jpeg", "webp"):
        files[codec] = tmp_path / f"{codec}.json"
        args = ["evaluate", "--codec", codec, "--qualities", "10", "30", "50", "70", "90",
                "--images", str(image_dir), "-o", str(files[codec]), "--no-progress"]  # fmt: skip
        assert main(args) == 0
    capsys.readouterr()
    jpeg, webp = (json.loads(files[c].read_text()) for c in ("jpeg", "webp"))
    assert (jpeg["name"], webp["name"]) == ("JPEG", "WebP") and "qualities 10, 30, 50, 70, 90" in webp[
        "description"
    ]
    out_png = tmp_path / "rd.png"
    assert main(["plot", str(files["jpeg"]), str(files["webp"]), "-o", str(out_png)]) == 0
    out = capsys.readouterr().out
    with Image.open(out_png) as figure:
        assert figure.format == "PNG" and figure.size[0] > figure.size[1]  # two panels side by side
    want = bd_rate(jpeg["results"]["bpp"], jpeg["results"]["psnr-rgb"],
                   webp["results"]["bpp"], webp["results"]["psnr-rgb"])  # fmt: skip
    assert "BD-rate against JPEG" in out and f"{want:+.2f} %" in out
    webp_row = next(line for line in out.splitlines() if line.startswith("WebP"))
    assert f"{want:+.2f} %" in webp_row and want < 0  # WebP saves bits over JPEG
    # Another anchor, by name.
    assert main(["plot", str(files["jpeg"]), str(files["webp"]), "-o", str(out_png), "--anchor", "WebP"]) == 0
    out = capsys.readouterr().out
    back = bd_rate(webp["results"]["bpp"], webp["results"]["psnr-rgb"],
                   jpeg["results"]["bpp"], jpeg["results"]["psnr-rgb"])  # fmt: skip
    assert "BD-rate against WebP" in out and f"{back:+.2f} %" in out and back > 0


def test_curves_in_db_and_undefined_bd_rates(tmp_path, capsys):
    assert ms_ssim_db(0.99) == pytest.approx(20.0) and ms_ssim_db(None) is None and ms_ssim_db(1.0) is None
    path = tmp_path / "three.json"
    results = {"bpp": [0.5, 0.2, 0.9], "psnr-rgb": [30.0, 27.0, 33.0], "ms-ssim-rgb": [0.99, None, 0.999]}
    path.write_text(json.dumps({"name": "three", "results": results}))
    curve = load_curve(path)
    assert curve.bpp == (0.2, 0.5, 0.9) and curve.psnr == (27.0, 30.0, 33.0)  # sorted by rate
    assert curve.ms_ssim_db[0] is None and curve.ms_ssim_db[2] == pytest.approx(30.0)
    assert main(["plot", str(path), str(path), "-o", str(tmp_path / "rd.png")]) == 0
    out = capsys.readouterr().out
    assert "n/a [1]" in out and "at least 4 rate-distortion points" in out and "three (three.json)" in out
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    assert main(["plot", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "not an evaluation results JSON (missing 'results')" in err and "Traceback" not in err
    assert main(["plot", str(path), "-o", str(tmp_path / "x.png"), "--anchor", "nope"]) == 2
    assert "is none of the curves" in capsys.readouterr().err


def _model_at(target_bpp: float, count: int) -> evaluate.ModelResult:
    fake = _fake_model_result()
    row = dataclasses.replace(fake.images[0], bpp=target_bpp, psnr=31.5)
    return dataclasses.replace(fake, images=(row,) * count)


def test_the_model_is_shown_beside_the_nearest_baseline_rate(image_dir):
    images = evaluate.load_images(str(image_dir))
    sizes = [
        np.mean([8 * len(_pillow_bytes(im, "WEBP", q)) / im[..., 0].size for _, im in images])
        for q in range(101)
    ]
    assert sizes[38] - sizes[37] > 1e-3
    target = (sizes[37] + sizes[38]) / 2 - 1e-4  # between two qualities, a little nearer to q=37
    comparison = baselines.compare_at_nearest_bpp(_model_at(target, len(images)), images, "webp")
    nearest = comparison.nearest
    assert nearest.quality == int(np.argmin([abs(s - target) for s in sizes])) and comparison.other is None
    assert nearest.bpp == pytest.approx(sizes[nearest.quality], abs=1e-12)
    assert (comparison.model_bpp, comparison.model_psnr) == (pytest.approx(target), 31.5)
    text = "\n".join(comparison.lines())
    assert f"{target:8.4f} bpp" in text and "WebP (Pillow" in text and f"q={nearest.quality} " in text
    assert "not an equal-rate" not in text
    # In the widest gap between two rates WebP can make: both neighbours are shown, and the gap said.
    ordered = sorted(range(101), key=lambda q: sizes[q])
    low, high = max(itertools.pairwise(ordered), key=lambda pair: sizes[pair[1]] / sizes[pair[0]])
    assert sizes[high] / sizes[low] > 1.11
    target = math.sqrt(sizes[low] * sizes[high])
    comparison = baselines.compare_at_nearest_bpp(_model_at(target, len(images)), images, "webp")
    shown = sorted([comparison.nearest, comparison.other], key=lambda p: p.bpp)
    assert [p.bpp for p in shown] == pytest.approx([sizes[low], sizes[high]], abs=1e-12)  # ties: any quality
    text = "\n".join(comparison.lines())
    assert all(f"q={p.quality} " in text for p in shown) and "not an equal-rate comparison" in text
    # Below every rate WebP can make: the nearest only, and the gap said.
    comparison = baselines.compare_at_nearest_bpp(_model_at(min(sizes) / 2, len(images)), images, "webp")
    assert comparison.nearest.bpp == pytest.approx(min(sizes)) and comparison.other is None
    assert "+100.0 % off" in "\n".join(comparison.lines())


def test_train_prints_the_comparison_of_a_run(tmp_path, monkeypatch, capsys):
    """The quickstart's config asks for it; `train` prints it for the real workdir and images."""
    from mscm_jax.training import train

    assert load_config(QUICKSTART).compare_with == "webp"
    overrides = ["--config.model.num_mixtures=1", "--config.model.schedule=checkerboard",
                 "--config.data.eval_crop=48", "--config.data.max_eval_images=2"]  # fmt: skip
    config = load_config(TINY, overrides)
    workdir = untrained_workdir(tmp_path / "run", overrides)
    summary = SimpleNamespace(steps_run=0, seconds=1.0, steps_per_second=0.0, input_images_per_second=0.0,
                              skipped_steps=0, process_index=0, process_count=1, params_sha256="0" * 64,
                              last_eval={}, state=SimpleNamespace(step=0))  # fmt: skip
    monkeypatch.setattr(train, "train", lambda *args, **kwargs: summary)  # the run itself is not under test
    tiny_with_webp = tmp_path / "tiny_webp.py"
    tiny_with_webp.write_text(
        "from mscm_jax.training.configs import load_config\n\n\ndef get_config():\n"
        f"    config = load_config({TINY!r})\n    config.compare_with = 'webp'\n    return config\n"
    )
    assert main(["train", "--config", str(tiny_with_webp), "--workdir", str(workdir), *overrides]) == 0
    out = capsys.readouterr().out
    images = baselines.heldout_images(config)
    assert [n for n, _ in images] == ["chelsea", "stereo_motorcycle:left"]
    assert all(im.shape == (48, 48, 3) for _, im in images)
    from mscm_jax.coding.codec import Codec

    model = evaluate.evaluate_codec(Codec.load(workdir), images)
    assert "held-out, coded for real: 2 images (chelsea, stereo_motorcycle:left; 48x48)" in out
    model_line = next(line for line in out.splitlines() if "this model" in line)
    assert f"{model.mean('bpp'):8.4f} bpp {model.mean('psnr'):7.2f} dB" in model_line
    assert "WebP (Pillow" in out and "nearest bpp of qualities 0-100" in out
    assert math.isfinite(model.mean("psnr"))
