"""Shared fixtures: a model trained for a few hundred steps, once per session."""

from pathlib import Path

import pytest

from mscm_jax.configs import load_config
from mscm_jax.train import train

TINY = str(Path(__file__).parent / "configs" / "tiny.py")
TRAINED_OVERRIDES = {
    "model.N": 16, "model.M": 16, "model.num_mixtures": 3, "model.schedule": "mscm2x2",
    "data.crop": 64, "train.batch_size": 8, "train.total_steps": 300, "train.learning_rate": 2e-3,
    "train.lr_decay_at": "(0.8,)", "train.lmbda": 0.013, "train.log_every": 100, "train.eval_every": 300,
    "train.checkpoint_every": 300,
}  # fmt: skip


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory) -> Path:
    """A small mbt2018 model (N = M = 16, mscm2x2, K = 3) trained 300 steps on the sample photos.

    Real latents, unlike a fresh initialization's: what the rate tests need.
    """
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = load_config(TINY, [f"--config.{k}={v}" for k, v in TRAINED_OVERRIDES.items()])
    train(config, workdir, progress=False)
    return workdir
