import re
from pathlib import Path

import pytest

from mscm_jax.training.configs import QUALITY_LAMBDAS, ConfigError, load_config

LAUNCH = Path(__file__).resolve().parent.parent / "launch"


def test_quickstart_and_paper_configs():
    quick = load_config(str(LAUNCH / "quickstart.py"))
    assert quick.model.schedule == "mscm2x2" and quick.data.source == "samples"
    paper = load_config(f"{LAUNCH / 'paper.py'}:mscm4x4-paper,q3")
    assert (
        paper.model.transform == "cheng2020-attn" and paper.model.N == 128 and paper.model.num_mixtures == 3
    )
    assert paper.train.lmbda == QUALITY_LAMBDAS[3] and paper.data.crop == 256 and paper.train.batch_size == 16
    high = load_config(f"{LAUNCH / 'paper.py'}:checkerboard,q6,mbt2018")
    assert high.model.transform == "mbt2018" and high.model.M == 320 and high.model.rounding == "y_minus_mean"


def test_overrides_are_typed():
    config = load_config(str(LAUNCH / "quickstart.py"), [
        "--config.train.batch_size=4", "--config.train.lmbda=0.01", "--config.model.schedule=mscm4x4-paper",
        "--config.train.freeze=analysis,synthesis", "--config.train.lr_decay_at=(0.5, 0.9)",
        "--config.model.schedule=[[0, 2], [3, 1]]",
    ])  # fmt: skip
    assert config.train.batch_size == 4 and config.train.lmbda == 0.01
    assert config.train.freeze == ("analysis", "synthesis") and config.train.lr_decay_at == (0.5, 0.9)
    assert config.model.schedule == "[[0, 2], [3, 1]]"


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.train.batchsize=8", "config.train has keys batch_size"),
        ("--config.trainer.steps=8", "has keys compare_with, data, model, train"),
        ("--config.train.batch_size=eight", "cannot parse .eight. as int"),
        ("--config.model.schedule=zigzag", "built-in schedules are hyperprior"),
        ("--config.model.transform=bls2017", "valid: mbt2018, cheng2020-attn"),
        ("--config.data.source=http://x", "samples, folder:PATH or tfds"),
        ("config.train.batch_size", "must look like"),
        ("--config.train.learning_rate=-1e-4", "learning_rate must be positive, got -0.0001"),
        ("--config.train.grad_clip=0", "grad_clip must be positive"),
        ("--config.train.lmbda=0", "lmbda must be positive"),
        ("--config.train.lr_decay_at=(0.8, 1.5)", r"lr_decay_at takes fractions of total_steps in \(0, 1\)"),
        ("--config.data.max_eval_images=0", "max_eval_images must be at least 1"),
    ],
)
def test_bad_overrides_name_the_valid_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(str(LAUNCH / "quickstart.py"), [override])


@pytest.mark.parametrize(
    "arg, message",
    [("mscm4x4-paper", "takes SCHEDULE,qQ"), ("mscm9x9,q3", "unknown schedule 'mscm9x9'"),
     ("mscm2x2,q7", "q1..q6"), ("mscm2x2,q3,bls2017", "transform must be one of"),
     ("[[0,1],[1,0]],q3", "a pattern of your own goes in --config.model.schedule")],
)  # fmt: skip
def test_paper_config_rejects_bad_arguments(arg, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(f"{LAUNCH / 'paper.py'}:{arg}")


def test_paper_config_takes_a_pattern_of_your_own_as_an_override():
    own = "--config.model.schedule=[[0, 2], [3, 1]]"
    config = load_config(f"{LAUNCH / 'paper.py'}:mscm4x4-paper,q3", [own])
    assert config.model.schedule == "[[0, 2], [3, 1]]" and config.model.M == 128


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("launch/nope.py")


def test_an_argument_to_a_config_that_takes_none_is_refused():
    with pytest.raises(ConfigError, match="takes no argument after ':', got 'q3'"):
        load_config(f"{LAUNCH / 'quickstart.py'}:q3")
