import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mscm_jax.cli import main


def test_schedules_lists_builtins_and_draws(capsys):
    assert main(["schedules"]) == 0
    out = capsys.readouterr().out
    for name in ("hyperprior", "checkerboard", "mscm2x2", "mscm3x3", "mscm4x4", "mscm4x4-paper", "serial"):
        assert name in out
    assert "0.0625" in out  # 4x4 anchor fraction
    assert "|  0 |  2 |  5 |  4 |" in out  # the authors' 4x4 order, drawn


def test_schedules_accepts_custom_pattern(capsys):
    assert main(["schedules", "[[0, 2], [3, 1]]", "--no-draw"]) == 0
    assert "2x2" in capsys.readouterr().out


def test_bad_pattern_is_one_clear_line(capsys):
    assert main(["schedules", "[[0, 1], [3, 4]]"]) == 2
    err = capsys.readouterr().err
    assert "0..S-1" in err and "Traceback" not in err


def test_estimate_on_a_sample_photo(capsys):
    args = ["estimate", "--image", "chelsea", "--channels", "4", "--mixtures", "1", "--schedules", "mscm2x2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mscm2x2" in out and "untrained" in out and "PSNR" in out


def test_console_entry_point_and_missing_file():
    result = subprocess.run(
        [sys.executable, "-m", "mscm_jax.cli", "estimate", "--image", "/no/such/image.png"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no such image" in result.stderr and "Traceback" not in result.stderr


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from mscm_jax import cli
    from mscm_jax.training.train import TrainingError

    def fails_with(error):
        def command(args):
            raise error

        return command

    monkeypatch.setattr(cli, "cmd_schedules", fails_with(TrainingError("no images in the folder")))
    assert cli.main(["schedules"]) == 2
    assert "error: no images in the folder" in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_schedules", fails_with(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # not swallowed into an exit code
        cli.main(["schedules"])


def test_output_planning_expands_folders_and_refuses_clashes(tmp_path, monkeypatch):
    from mscm_jax import cli

    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/a.png", "sub/b.JPG", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    suffixes = (".png", ".jpg", ".jpeg")
    planned = cli._planned_outputs(["in", "c.png"], suffixes, "out", ".mscm")
    in_order = [("in/a.png", Path("out/a.mscm")), ("in/sub/a.png", Path("out/sub/a.mscm")),
                ("in/sub/b.JPG", Path("out/sub/b.mscm")), ("c.png", Path("out/c.mscm"))]  # fmt: skip
    assert list(planned.items()) == in_order
    assert cli._planned_outputs(["c.png"], suffixes, "one.mscm", ".mscm") == {"c.png": Path("one.mscm")}
    with pytest.raises(cli.UsageError, match=re.escape("in/a.png and x/a.png would both write out/a.mscm")):
        cli._planned_outputs(["in", "x/a.png"], suffixes, "out", ".mscm")
    with pytest.raises(cli.UsageError, match=re.escape("-o one.mscm names one file, but there are 3 inputs")):
        cli._planned_outputs(["in"], suffixes, "one.mscm", ".mscm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(cli.UsageError, match=re.escape("empty: the folder holds no .mscm files")):
        cli._planned_outputs(["empty"], (".mscm",), "", ".png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--model", "m", "--max-images", "-1"], "--max-images: takes an integer of at least 0"),
        (["optimize-order", "--model", "m", "--max-images", "2.5"], "at least 0, got '2.5'"),
        (["decompress", "f.mscm", "--max-pixels", "0"], "--max-pixels: takes an integer of at least 1"),
        (["compress", "x.png", "--model", "m", "--size-step", "96"], "--size-step: takes 0 or a multiple"),
        (["compress", "x.png", "--model", "m", "--size-step", "4160"], "up to 4096, got 4160"),
    ],
)
def test_counts_out_of_range_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-processes", "2"], "--num-processes goes with --distributed"),
        (["--num-processes", "2", "--process-id", "0"], "--num-processes and --process-id go with"),
        (["--distributed", "--coordinator", "localhost:1"], "go together (none: auto-detect)"),
        (["--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "got 2"),
    ],
)
def test_distributed_options_are_checked_before_anything_starts(args, message, tmp_path, capsys):
    tiny = Path(__file__).parent / "configs" / "tiny.py"
    assert main(["train", "--config", str(tiny), "--workdir", str(tmp_path / "run"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--calibration", "samples"], ["--calibration-images", "2"]])
def test_calibration_options_without_integer_are_refused(args, tmp_path, capsys):
    out = tmp_path / "m.mscm-model"
    assert main(["export", str(tmp_path / "workdir"), "-o", str(out), "--no-store", *args]) == 2
    assert f"{args[0]} goes with --integer" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [([], "or --codec, one of them"), (["--model", "m", "--codec", "jpeg"], "or --codec, not both"),
     (["--model", "m", "--qualities", "10"], "--qualities goes with --codec")],
)  # fmt: skip
def test_evaluate_needs_a_model_or_a_codec(args, message, tmp_path, capsys):
    assert main(["evaluate", *args, "-o", str(tmp_path / "r.json")]) == 2
    assert message in capsys.readouterr().err


def test_distributed_without_a_cluster_says_what_to_give(tmp_path):
    # A subprocess: jax.distributed.initialize changes global state. No cluster variables, so that
    # JAX's auto-detection finds nothing to join wherever the tests run.
    launchers = ("SLURM_", "OMPI_", "PMI_", "KUBERNETES_", "TPU_", "CLOUD_TPU")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launchers)}
    tiny = Path(__file__).parent / "configs" / "tiny.py"
    args = ["train", "--config", str(tiny), "--workdir", str(tmp_path / "run"), "--distributed"]
    result = subprocess.run([sys.executable, "-m", "mscm_jax.cli", *args], capture_output=True, text=True,
                            timeout=120, env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--distributed found no cluster to join" in result.stderr
    assert "--coordinator HOST:PORT" in result.stderr
    assert not (tmp_path / "run").exists()


def test_output_into_a_closed_pipe_ends_quietly():
    """`mscm-jax schedules | head -1`: the reader is gone before the output is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "mscm_jax.cli", "schedules"], stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_missing_file_is_named_in_plain_words(tmp_path, capsys):
    missing = tmp_path / "missing.mscm"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"error: no such file: {missing}" in err and "Errno" not in err
    assert main(["plot", str(missing.with_suffix(".json")), "-o", str(tmp_path / "rd.png")]) == 2
    err = capsys.readouterr().err
    assert f"error: no such file: {missing.with_suffix('.json')}" in err and "Errno" not in err
