"""Experiment helpers (summaries, resolution rule, tables, plots) and smoke runs of the experiment scripts."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mscm_jax.tools import experiment
from mscm_jax.tools.evaluate import ImageResult, ModelResult
from mscm_jax.training.data import load_sample
from mscm_jax.training.train import load_workdir_params

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(stream_bits, z_bits=100, psnr=30.0, pixels=(64, 64)) -> ModelResult:
    """A fake ModelResult of one image: payload = z + streams, header 10 bytes."""
    h, w = pixels
    payload = z_bits + sum(stream_bits)
    image = ImageResult(
        name="x", height=h, width=w, bytes=payload // 8 + 10, bpp=(payload + 80) / (h * w),
        payload_bpp=payload / (h * w), header_bytes=10, z_bits=z_bits, stream_bits=tuple(stream_bits),
        psnr=psnr, ms_ssim=None, encoding_time=0.1, decoding_time=0.3, entropy_decoding_time=0.2,
        synthesis_time=0.1, compile_time=0.0,
    )  # fmt: skip
    return ModelResult("m", "s", "d", 1, "f", 0.0, (image,))


def _summary(label, schedule, per_seed_stream_bits):
    models = [_model(bits) for bits in per_seed_stream_bits]
    params = [{"context": 10, "context_kernel": 4}] * len(models)
    return experiment.summarize(label, schedule, models, params, [0.1] * len(models), transform="mbt2018")


def test_summary_fields():
    s = _summary("checkerboard", "checkerboard", [(300, 100), (310, 90), (290, 110)])
    assert (s.patch, s.stages, s.anchor_fraction, s.seeds) == ("2x2", "2", 0.5, 3)
    assert s.payload_bpp == pytest.approx(500 / 4096)  # every seed: 100 + 400 bits
    assert s.payload_bpp_sd == pytest.approx(0.0, abs=1e-15)
    assert s.stage_bpp == pytest.approx((300 / 4096, 100 / 4096))
    assert s.anchor_share == pytest.approx(0.75)
    assert s.z_bpp == pytest.approx(100 / 4096) and s.latent_elements == 16
    serial = _summary("serial", "serial", [(350,), (360,)])
    assert serial.stages == "h*w" and serial.anchor_share is None and serial.stage_bpp == ()
    assert serial.payload_bpp_sd == pytest.approx(np.std([450 / 4096, 460 / 4096], ddof=1))


def test_resolution_rule_and_ordering():
    a = _summary("serial", "serial", [(300,), (310,), (320,)])  # sd 10 bits / 4096 px
    b = _summary("mscm4x4", "mscm4x4", [(300 + 5,) + (0,) * 15, (315,) + (0,) * 15, (325,) + (0,) * 15])
    c = _summary("mscm2x2", "mscm2x2", [(500, 0, 0, 0), (510, 0, 0, 0), (520, 0, 0, 0)])
    assert not experiment.resolved(a, b) and experiment.resolved(a, c)
    # Paired by seed, b is consistently ~1.2 % above a: resolved by the paired rule only.
    mean, sd = experiment.paired_change(b, a)
    assert mean > 0 and sd < mean and experiment.paired_resolved(b, a)
    assert experiment.rate_change(b, a).endswith("(paired only)")
    assert experiment.rate_change(c, a).startswith("+") and "(" not in experiment.rate_change(c, a)
    noisy = _summary("mscm4x4", "mscm4x4", [(310,) + (0,) * 15, (300,) + (0,) * 15, (330,) + (0,) * 15])
    assert not experiment.paired_resolved(noisy, a) and experiment.rate_change(noisy, a).endswith(
        "(unresolved)"
    )
    lines = experiment.paper_ordering({"serial": a, "mscm4x4": b, "mscm2x2": c})
    assert lines[0].startswith("serial <= mscm4x4: unpaired unresolved, paired holds")
    assert lines[1].startswith("mscm4x4 < mscm2x2: unpaired holds, paired holds")
    reversed_ = experiment.paper_ordering({"mscm4x4": c, "mscm2x2": a})
    assert "unpaired REVERSED, paired REVERSED" in reversed_[0]
    table = experiment.markdown_table([a, b, c])
    assert table.count("\n") == 4 and "| serial | - | h*w |" in table and "(paired only)" in table


def test_bd_rate_table_and_plots(tmp_path):
    rates = [0.2, 0.4, 0.8, 1.6]
    psnrs = [28.0, 31.0, 34.0, 37.0]
    curves = {
        "anchor": (rates, psnrs),
        "better": ([0.9 * r for r in rates], psnrs),
        "short": (rates[:2], psnrs[:2]),
    }
    table = experiment.bd_rate_markdown(curves, "anchor")
    assert "| better | 4 | -10.00 % |" in table  # same PSNRs at 10 % less rate
    assert "| short | 2 | undefined: " in table and "at least 4" in table
    experiment.plot_rd(curves, tmp_path / "rd.png")
    s = [
        _summary("checkerboard", "checkerboard", [(300, 100), (320, 90)]),
        _summary("serial", "serial", [(350,)]),
    ]
    experiment.plot_vs_stages(s, tmp_path / "b.png", tmp_path / "t.png")
    for name in ("rd.png", "b.png", "t.png"):
        assert Image.open(tmp_path / name).size[0] > 100


def test_rd_curves_sorted_by_rate():
    models = [_model((400,), psnr=31.0), _model((200,), psnr=29.0)]
    rates, psnrs = experiment.rd_curves({"s": models})["s"]
    assert rates == sorted(rates) and psnrs == [29.0, 31.0]


def test_run_metadata_names_command_commit_machine():
    meta = experiment.run_metadata(["experiments/x.py", "--a"])
    assert meta["command"].endswith("experiments/x.py --a")
    assert len(meta["git_commit"]) == 40 or meta["git_commit"] == "unknown"
    assert "CPUs" in meta["machine"] and meta["jax"]


@pytest.fixture(scope="module")
def small_image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    Image.fromarray(load_sample("chelsea")[:64, :80]).save(folder / "a.png")
    return folder


def _compare_smoke(tmp_path, images, schedules):
    args = ["--smoke", "--run-name", "t", "--results", str(tmp_path / "r"), "--workroot", str(tmp_path / "w"),
            "--seeds", "0", "1", "--schedules", *schedules, "--images", str(images)]  # fmt: skip
    assert _script("compare_schedules").main(args) == 0
    return tmp_path / "r" / "t"


def test_compare_schedules_smoke(tmp_path, small_image_dir):
    """The whole pipeline at tiny settings: base, order search, frozen schedule x seeds, coding, outputs.

    One schedule (the searched order: the pattern path) to stay within a minute with a cold
    compilation cache; the slow test below runs every schedule through the same code.
    """
    out = _compare_smoke(tmp_path, small_image_dir, ["optimized4x4"])
    assert {p.name for p in out.iterdir()} >= {"README.md", "table.md", "results.json", "base_config.json",
                                               "bpp_vs_stages.png", "decode_time_vs_stages.png"}  # fmt: skip
    record = json.loads((out / "results.json").read_text())
    pattern = record["order_search"]["pattern"]
    assert sorted(np.ravel(pattern).tolist()) == list(range(16))
    summaries = {s["label"]: s for s in record["summaries"]}
    assert summaries["optimized4x4"]["schedule"] == json.dumps(pattern)
    assert all(s["seeds"] == 2 for s in summaries.values())
    assert len(record["evaluations"]["optimized4x4"]["results"]["bpp"]) == 2  # CompressAI layout, per seed
    readme = (out / "README.md").read_text()
    assert "experiments/compare_schedules.py --smoke" in readme and record["metadata"]["git_commit"] in readme


@pytest.mark.slow
def test_compare_schedules_smoke_all_schedules(tmp_path, small_image_dir):
    """Every default schedule, serial included (the fast test above runs the same code on two)."""
    out = _compare_smoke(tmp_path, small_image_dir, _script("compare_schedules").SCHEDULES)
    record = json.loads((out / "results.json").read_text())
    assert [s["label"] for s in record["summaries"]] == list(_script("compare_schedules").SCHEDULES)
    assert len(record["paper_ordering"]) == 4
    # Frozen transforms: every schedule decodes the same latent, so the same image.
    assert len({round(s["psnr"], 9) for s in record["summaries"]}) == 1


def test_rd_sweep_smoke(tmp_path, small_image_dir):
    """One point: trains, evaluates, plots; the BD-rate is undefined (< 4 points), and the table says so.

    `hyperprior`, the schedule without context weights, so that its training, checkpoint and coding
    are covered here too.
    """
    args = ["--smoke", "--run-name", "t", "--results", str(tmp_path / "r"), "--workroot", str(tmp_path / "w"),
            "--schedules", "hyperprior", "--qualities", "3", "--family", "mbt2018",
            "--images", str(small_image_dir), "--config.train.lmbda=0.01"]  # fmt: skip
    assert _script("rd_sweep").main(args) == 0
    out = tmp_path / "r" / "t"
    curve = json.loads((out / "hyperprior.json").read_text())
    assert curve["name"] == "hyperprior" and len(curve["results"]["bpp"]) == 1
    assert "undefined" in (out / "bd_rate.md").read_text() and (out / "rd.png").exists()
    configs = json.loads((out / "configs.json").read_text())
    assert set(configs) == {"hyperprior-q3"} and configs["hyperprior-q3"]["train"]["lmbda"] == 0.01
    _, params, _ = load_workdir_params(tmp_path / "w" / "hyperprior-q3")
    assert "context_kernel" not in params["params"]["context"]  # no zero-size array for Orbax to refuse


@pytest.mark.slow
def test_rd_sweep_smoke_with_bd_rates(tmp_path, small_image_dir):
    """Four qualities per schedule: the BD-rate path with enough points (values meaningless at this size)."""
    args = ["--smoke", "--run-name", "t", "--results", str(tmp_path / "r"), "--workroot", str(tmp_path / "w"),
            "--schedules", "hyperprior", "checkerboard", "--qualities", "1", "2", "5", "6",
            "--family", "mbt2018",
            "--images", str(small_image_dir)]  # fmt: skip
    assert _script("rd_sweep").main(args) == 0
    assert "| checkerboard | 4 |" in (tmp_path / "r" / "t" / "bd_rate.md").read_text()


def test_authors_decode_cost_smoke(tmp_path, torch_python):
    """Both sides measured and compared at a tiny size; the rebuilt authors' masks match PAPER.md's counts."""
    script = _script("authors_decode_cost")
    args = ["--run-name", "t", "--results", str(tmp_path), "--torch-python", str(torch_python),
            "--height", "64", "--width", "64", "--channels", "8", "--repeats", "1"]  # fmt: skip
    assert script.main(args) == 0
    record = json.loads((tmp_path / "t" / "results.json").read_text())
    authors, ours = record["authors_here"], record["ours"]["schedules"]
    assert set(ours) == set(script.OURS) and authors["channels"] == 8
    assert len(record["ours"]["ratio_4x4_checkerboard"]["per_repeat"]) == 1
    counts = {n: p["context_counts"] for n, p in authors["patterns"].items()}
    assert counts == {
        "mscm2x2": [0, 6, 10, 16],
        "mscm4x4-paper": [0, 1, 2, 4, 5, 8, 12, 9, 11, 15, 17, 18, 21, 22, 23, 24],
    }
    for row in record["comparison"]:
        theirs = authors["patterns"][row["schedule"]]["entropy_decoding_lower_bound_s"]
        assert (
            theirs > 0 and row["ours_vs_authors_here"] == ours[row["schedule"]]["entropy_decoding_s"] / theirs
        )
    readme = (tmp_path / "t" / "README.md").read_text()
    assert "experiments/authors_decode_cost.py --run-name t" in readme and "| mscm4x4-paper |" in readme
