"""`mscm-jax optimize-order` on a tiny freshly initialized model saved as a workdir."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from mscm_jax.cli import main
from mscm_jax.model.compression_model import CompressionModel
from mscm_jax.model.schedules import get_schedule
from mscm_jax.model.transforms import spread_latents
from mscm_jax.training.configs import load_config
from mscm_jax.training.train import (
    checkpoint_manager,
    init_state,
    model_config,
    prepare_workdir,
    save_checkpoint,
)

TINY = str(Path(__file__).parent / "configs" / "tiny.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A step-0 workdir of the tiny test model, without compiling a train step.

    Its last analysis layer is scaled up so that the rounded latents are not all zero.
    """
    path = tmp_path_factory.mktemp("tiny")
    config = load_config(TINY, [])
    prepare_workdir(path, config)
    state, _ = init_state(CompressionModel(model_config(config)), config.train, jax.random.PRNGKey(0), 64)
    state = state.replace(params=spread_latents(state.params, config.model.transform, 200.0))
    manager = checkpoint_manager(path, 1)
    save_checkpoint(manager, state, {"seed": config.train.seed, "next_step": 0})
    manager.wait_until_finished()
    manager.close()
    return path


def pasted_pattern(out):
    return json.loads(out.strip().splitlines()[-1])


def test_optimize_order_prints_a_pattern_ready_to_paste(workdir, capsys):
    assert main(["optimize-order", "--model", str(workdir), "--patch", "4", "--max-images", "1"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "raster order" in out and "authors' order" in out
    schedule = get_schedule(pasted_pattern(out))
    assert schedule.patch_size == 4 and schedule.num_stages == 16


def test_optimize_order_with_fewer_stages_on_a_folder(workdir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.integers(-3, 4, (96, 128, 3)), 0), 1)
    image = np.clip(128 + smooth * 255 / np.ptp(smooth), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    args = [
        "optimize-order",
        "--model",
        str(workdir),
        "--patch",
        "2",
        "--stages",
        "2",
        "--images",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 images: " in out and "2 equal groups" in out
    assert get_schedule(pasted_pattern(out)).num_stages == 2


def test_bad_stage_count_is_one_line(workdir, capsys):
    assert main(["optimize-order", "--model", str(workdir), "--patch", "2", "--stages", "5"]) == 2
    err = capsys.readouterr().err
    assert "--stages must be in 1..4" in err and "Traceback" not in err
