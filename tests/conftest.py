"""Shared fixtures: a model trained for a few hundred steps, and the PyTorch venv; once per test run."""

import atexit
import fcntl
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

# One persistent XLA compilation cache per test run, set before JAX is imported:
# the many processes and models that compile the same programs (a training
# subprocess per resume step, a Codec per test) compile each once. Fresh per run,
# so nothing stale from another checkout is reused. pytest-xdist workers inherit it.
if "MSCM_JAX_CACHE_DIR" not in os.environ:
    os.environ["MSCM_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="mscm-jax-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MSCM_JAX_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["MSCM_JAX_CACHE_DIR"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Models that commands register (compress, export, import-torch) go to a store of this run, not the user's.
if "MSCM_JAX_MODELS" not in os.environ:
    os.environ["MSCM_JAX_MODELS"] = tempfile.mkdtemp(prefix="mscm-jax-test-models-")
    atexit.register(shutil.rmtree, os.environ["MSCM_JAX_MODELS"], ignore_errors=True)

import pytest

from mscm_jax.tools.experiment import torch_reference_python
from mscm_jax.training.configs import load_config
from mscm_jax.training.train import train

TINY = str(Path(__file__).parent / "configs" / "tiny.py")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """An xdist worker's heap, frozen once its tests are done: out of reach of the last collections.

    After this hook pytest runs five full garbage collections (its last check for unraisable
    exceptions). Measured at the end of a full run, each took 1-2.8 s in a worker, whose heap holds
    every program compiled there; xdist interrupts a worker still busy 5 s after the end, so the
    run waited for it and printed a KeyboardInterrupt inside JAX's `_xla_gc_callback`. A frozen
    heap is not walked: 0.11 s -> 0.0 s for one collection over 207k objects.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        gc.freeze()


def untrained_workdir(path: Path, overrides: list[str], seed: int = 0) -> Path:
    """A training workdir of the tiny config with one checkpoint at initialization (no training)."""
    import jax

    from mscm_jax.model.compression_model import CompressionModel
    from mscm_jax.training import train as training
    from mscm_jax.training.configs import model_config

    config = load_config(TINY, overrides)
    workdir = training.absolute_workdir(path)
    training.prepare_workdir(workdir, config)
    model = CompressionModel(model_config(config))
    state, _ = training.init_state(model, config.train, jax.random.PRNGKey(seed), 32)
    manager = training.checkpoint_manager(workdir, 1)
    training.save_checkpoint(manager, state, {"seed": 0, "next_step": 0})
    manager.wait_until_finished()
    manager.close()
    return Path(workdir)


TORCH_OPT_OUT = "MSCM_JAX_SKIP_TORCH_PARITY"
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
    # Under pytest-xdist each worker has its own basetemp inside the run's one:
    # the first worker to get here trains, the others wait on the lock and reuse it.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    workdir, done = root / "trained" / "run", root / "trained" / "done"
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(root / "trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            config = load_config(TINY, [f"--config.{k}={v}" for k, v in TRAINED_OVERRIDES.items()])
            train(config, workdir, progress=False)
            done.touch()
    return workdir


@pytest.fixture(scope="session")
def torch_python() -> Path:
    """Python of the PyTorch + CompressAI venv (`experiment.torch_reference_python`), made on first use.

    A setup failure fails the tests that need it; MSCM_JAX_SKIP_TORCH_PARITY=1 skips them.
    """
    if os.environ.get(TORCH_OPT_OUT) == "1":
        pytest.skip(f"{TORCH_OPT_OUT}=1: tests that need PyTorch opted out")
    started = time.perf_counter()
    try:
        python = Path(torch_reference_python())
    except RuntimeError as e:
        pytest.fail(f"{e}\n(set {TORCH_OPT_OUT}=1 to opt out)")
    print(f"\n[torch venv] {python.parent.parent} ready in {time.perf_counter() - started:.1f} s")
    return python
