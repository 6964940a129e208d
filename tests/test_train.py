"""Training: outputs, non-finite steps, freezing, EMA, exact resume, multi-device."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mscm_jax.training.configs import load_config
from mscm_jax.training.train import TrainingError, load_workdir_params, train

TINY = str(Path(__file__).parent / "configs" / "tiny.py")
REPO = Path(__file__).resolve().parent.parent


def tiny(**overrides):
    return load_config(TINY, [f"--config.{k}={v}" for k, v in overrides.items()])


def run_cli(workdir, *args, env=None, timeout=300, wait=True):
    cmd = [sys.executable, "-m", "mscm_jax.cli", "train", "--config", TINY, "--workdir", str(workdir),
           "--no-progress", *args]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO
        )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)


def params_of(workdir):
    return load_workdir_params(workdir, prefer_ema=False)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_run_leaves_checkpoint_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative workdir, as in the README's command
    summary = train(tiny(), "run", progress=False)
    run = tmp_path / "run"
    assert summary.steps_run == 4 and summary.skipped_steps == 0
    assert json.loads((run / "config.json").read_text())["model"]["schedule"] == "mscm2x2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "eval"}
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert {"bpp", "psnr", "loss", "steps_per_second"} <= set(rows[0])
    assert list((run / "tb").iterdir()), "no TensorBoard events"
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    _, params, step = params_of(run)
    assert step == 4
    assert_trees_equal(params, summary.state.params)
    # Re-running the same command resumes at the end: nothing left to do.
    again = train(tiny(), "run", progress=False)
    assert again.steps_run == 0
    assert_trees_equal(again.state.params, summary.state.params)


def test_nonfinite_steps_are_skipped_then_stop(tmp_path, monkeypatch):
    """Run a: a finite loss with NaN gradients (skipped); run b: NaN batches, a NaN loss (stops).

    Both runs train with the loss below, so that they share one compiled step."""
    from mscm_jax.training import train as training

    config = tiny(**{"train.max_nonfinite_in_row": 2, "train.total_steps": 6})
    good = np.full((4, 32, 32, 3), 0.5, np.float32)
    bad, bright = np.full_like(good, np.nan), np.ones_like(good)

    def batches(kinds):
        yield from ((i, {"bad": bad, "bright": bright}.get(k, good)) for i, k in enumerate(kinds))

    rate_distortion_loss = training.rate_distortion_loss

    def loss_with_nan_gradients_on_bright_batches(result, x, lmbda):
        loss, metrics = rate_distortion_loss(result, x, lmbda)
        # 0 * sqrt(0) adds 0 to the loss, and NaN to its gradients (sqrt's slope at 0 is infinite).
        loss = loss + 0.0 * jnp.sqrt(jnp.where(jnp.max(x) > 0.9, metrics["mse"] - metrics["mse"], 1.0))
        return loss, {**metrics, "loss": loss}

    monkeypatch.setattr(training, "rate_distortion_loss", loss_with_nan_gradients_on_bright_batches)
    summary = train(
        config, tmp_path / "a", batches=batches(["bright", "good", "bright", "good"]), progress=False
    )
    assert summary.skipped_steps == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(summary.state.params))

    with pytest.raises(TrainingError, match="2 non-finite steps in a row"):
        train(config, tmp_path / "b", batches=batches(["good", "bad", "bad", "good"]), progress=False)
    # The checkpoint at step 2 holds finite parameters only; none was written after.
    _, params, step = params_of(tmp_path / "b")
    assert step == 2 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_a_fresh_state_and_its_checkpoint_compile_a_few_programs_and_refuse_non_finite_values(tmp_path):
    """The optimizer and EMA start and the checkpoint's finiteness check are compiled calls: op by op,
    each operation compiled once per parameter shape (over 40 programs, 3 s of a tiny model's start)."""
    from mscm_jax.model.compression_model import CompressionModel
    from mscm_jax.training import train as training
    from mscm_jax.training.configs import model_config

    # N = M = 6: parameter shapes no other test compiles, so no program is already in this process.
    config = load_config(TINY, ["--config.model.N=6", "--config.model.M=6", "--config.train.ema_decay=0.5"])
    model = CompressionModel(model_config(config))
    params = training.init_params(model, jax.random.PRNGKey(0), 32)
    compiled = []

    def count(event, _seconds, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        tx = training.make_optimizer(config.train, params)
        opt_state, ema = training.optimizer_and_ema(tx, params, config.train)
        state = training.TrainState(jnp.zeros((), jnp.int32), params, opt_state, ema)
        manager = training.checkpoint_manager(training.absolute_workdir(tmp_path / "run"), 1)
        training.save_checkpoint(manager, state, {"seed": 0, "next_step": 0})
        manager.wait_until_finished()
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert len(compiled) <= 6, len(compiled)  # 3 with jax 0.10.2; op by op, 46
    assert manager.latest_step() == 0
    # The EMA is a copy, not the parameters' buffers (the train step donates both).
    ema_leaf, param_leaf = jax.tree.leaves(ema)[0], jax.tree.leaves(params)[0]
    assert ema_leaf.unsafe_buffer_pointer() != param_leaf.unsafe_buffer_pointer()
    np.testing.assert_array_equal(np.asarray(ema_leaf), np.asarray(param_leaf))
    for tree in ("params", "ema_params"):
        leaves, structure = jax.tree.flatten(getattr(state, tree))
        leaves[-1] = leaves[-1].at[(0,) * leaves[-1].ndim].set(np.nan)  # one NaN
        broken = state.replace(**{tree: jax.tree.unflatten(structure, leaves)})
        with pytest.raises(TrainingError, match="refusing to checkpoint non-finite parameters at step 0"):
            training.save_checkpoint(manager, broken, {"seed": 0, "next_step": 0})
    manager.close()


def test_freeze_ema_and_gradient_accumulation(tmp_path):
    config = tiny(**{
        "train.freeze": "analysis,synthesis", "train.ema_decay": 0.5,
        "train.grad_accum_steps": 2, "train.total_steps": 2, "train.eval_every": 2,
    })  # fmt: skip
    summary = train(config, tmp_path / "frozen", progress=False)
    # Same seed, same init: the frozen groups equal a fresh init's.
    from mscm_jax.model.compression_model import CompressionModel
    from mscm_jax.training.configs import model_config
    from mscm_jax.training.train import init_state

    fresh, _ = init_state(CompressionModel(model_config(config)), config.train,
                          jax.random.split(jax.random.PRNGKey(0))[0], 32)  # fmt: skip
    params = summary.state.params["params"]
    for group in ("g_a", "g_s"):
        assert_trees_equal(params[group], fresh.params["params"][group])
    changed = jax.tree.leaves(
        jax.tree.map(lambda a, b: jnp.any(a != b), params["h_a"], fresh.params["params"]["h_a"])
    )
    assert any(bool(c) for c in changed)
    ema = summary.state.ema_params["params"]["context"]["context_kernel"]
    assert not np.array_equal(np.asarray(ema), np.asarray(params["context"]["context_kernel"]))
    # The eval used the EMA weights and ran.
    assert np.isfinite(summary.last_eval["bpp"])


def test_bad_configs_are_clear(tmp_path):
    from mscm_jax.training.configs import ConfigError

    with pytest.raises(ConfigError, match="multiple of grad_accum_steps"):
        tiny(**{"train.grad_accum_steps": 3})
    with pytest.raises(ConfigError, match="unknown parameter group"):
        tiny(**{"train.freeze": "decoder"})
    result = run_cli(tmp_path / "x", "--config.train.batchsize=8", timeout=120)
    assert result.returncode == 2 and "batch_size" in result.stderr and "Traceback" not in result.stderr
    # Data is opened before anything is written: the failed start leaves no workdir that would
    # refuse the corrected command (a workdir's model cannot change).
    (tmp_path / "empty").mkdir()
    result = run_cli(tmp_path / "y", f"--config.data.source=folder:{tmp_path / 'empty'}", timeout=120)
    assert result.returncode == 2 and "no readable PNG/JPEG images" in result.stderr
    assert not (tmp_path / "y").exists()


# Trains the tiny config on the loader's own batches, but waits after step 2 (whose checkpoint
# is then saved): a run to be pre-empted at a known point.
PAUSE_AFTER_STEP_2 = """
import sys, time
from mscm_jax.training.configs import load_config
from mscm_jax.training.train import open_data, train

config = load_config(sys.argv[1], [])

def batches():
    for step, batch in open_data(config)[0].iterate(0, config.train.total_steps):
        yield step, batch
        if step + 1 == 2:
            time.sleep(600)

train(config, sys.argv[2], batches=batches(), progress=False)
"""


def kill_once_checkpointed(workdir, step, timeout=300):
    """Runs PAUSE_AFTER_STEP_2 and SIGKILLs it once the checkpoint of `step` is complete."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AFTER_STEP_2, TINY, str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    deadline = time.time() + timeout
    # Orbax writes into a temporary folder and renames it to the step number when complete.
    while (
        proc.poll() is None and time.time() < deadline and not (workdir / "checkpoints" / str(step)).is_dir()
    ):
        time.sleep(0.2)
    proc.kill()
    _, err = proc.communicate()
    return proc.returncode, err


def test_resume_after_sigkill_is_exact(tmp_path):
    """2k steps straight == k steps, SIGKILL from outside, resume to 2k (bitwise, on CPU)."""
    straight = run_cli(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    returncode, err = kill_once_checkpointed(tmp_path / "resumed", 2)
    assert returncode == -signal.SIGKILL, err[-2000:]
    assert params_of(tmp_path / "resumed")[2] == 2
    # What a kill in the middle of a save leaves behind: a temporary folder.
    leftover = tmp_path / "resumed" / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000"
    leftover.mkdir()
    resumed = run_cli(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step 2" in resumed.stderr
    assert not leftover.exists()
    _, a, _ = params_of(tmp_path / "straight")
    _, b, step = params_of(tmp_path / "resumed")
    assert step == 4
    assert_trees_equal(a, b)
    again = run_cli(tmp_path / "straight", "--config.train.total_steps=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to train: the run is at step 4 and total_steps is 3" in again.stdout


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    workdir = tmp_path / "run"
    proc = run_cli(workdir, "--config.train.total_steps=100000", "--config.train.checkpoint_every=100000",
                   "--config.train.eval_every=100000", wait=False)  # fmt: skip
    deadline = time.time() + 240
    metrics = workdir / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint saved" in err
    assert params_of(workdir)[2] >= 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_four_devices_match_one_device(tmp_path):
    # Both runs at once: each spends most of its time compiling on one core.
    runs = [run_cli(tmp_path / "one", "--config.train.total_steps=2", wait=False),
            run_cli(tmp_path / "four", "--config.train.total_steps=2", wait=False,
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})]  # fmt: skip
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for err in errors]
    _, a, _ = params_of(tmp_path / "one")
    _, b, _ = params_of(tmp_path / "four")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_two_process_distributed_training(tmp_path):
    """Two processes on localhost (CPU collectives), one shared workdir, as on a pod: SIGTERM to one,
    a resumed run to the end, and a failure on process 0 alone."""
    workdir = tmp_path / "shared"

    def distributed(*more):
        return ["--distributed", "--coordinator", f"localhost:{_free_port()}", "--num-processes", "2",
                "--init-timeout", "60", *more]  # fmt: skip

    # SIGTERM reaches process 1 only: both stop after the same step, with one checkpoint (each saving
    # at the step it heard of the signal, process 0 waited forever and nothing was saved).
    endless = ["--config.train.total_steps=100000", "--config.train.checkpoint_every=100000",
               "--config.train.eval_every=100000"]  # fmt: skip
    outputs = _run_two_processes(workdir, distributed(*endless), 150, stop_process=1)
    assert [rc for rc, _, _ in outputs] == [143, 143], [err[-2000:] for _, _, err in outputs]
    assert all("checkpoint saved" in err for _, _, err in outputs)
    saved = params_of(workdir)[2]
    assert saved >= 3
    outputs = _run_two_processes(workdir, distributed(f"--config.train.total_steps={saved + 1}"))
    for rc, _, err in outputs:
        assert rc == 0, err[-2000:]
    fingerprints = [next(line for line in out.splitlines() if "sha256" in line) for _, out, _ in outputs]
    assert "process 0/2" in fingerprints[0] and "process 1/2" in fingerprints[1]
    assert fingerprints[0].split()[-1] == fingerprints[1].split()[-1]
    assert params_of(workdir)[2] == saved + 1
    # A new run that starts from that one (before, both `init_from` and resuming stopped with "does not
    # support cross-host device transfers": the loaded arrays sat on each process's own device).
    start_from = distributed("--config.train.total_steps=1", f"--config.train.init_from={workdir}")
    outputs = _run_two_processes(tmp_path / "next", start_from)
    for rc, _, err in outputs:
        assert rc == 0, err[-2000:]
        assert f"from {workdir} step {saved + 1}" in err
    # Another model in that workdir: only process 0 checks config.json, and process 1 stops with its
    # reason at once, instead of waiting for process 0 at the first collective.
    outputs = _run_two_processes(workdir, distributed("--config.model.schedule=checkerboard"), 120)
    assert [rc for rc, _, _ in outputs] == [2, 2], [err[-2000:] for _, _, err in outputs]
    assert "holds a run of another model" in outputs[0][2]
    assert "preparing the workdir failed on process 0 of 2:" in outputs[1][2]
    assert "holds a run of another model" in outputs[1][2]


def _run_two_processes(workdir, args, timeout=300, stop_process=None) -> list[tuple[int, str, str]]:
    """Both processes' (return code, stdout, stderr); `stop_process` gets SIGTERM after 3 logged steps."""
    procs = [run_cli(workdir, *args, "--process-id", str(i), wait=False) for i in range(2)]
    outputs = []
    try:
        if stop_process is not None:
            metrics, deadline = workdir / "metrics.jsonl", time.time() + 240
            while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
                time.sleep(0.5)
            procs[stop_process].send_signal(signal.SIGTERM)
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def test_on_every_process_runs_process_zero_first_and_fails_together(tmp_path):
    """`on_every_process` in two processes (tests/multihost_worker.py prints one line per case)."""
    port, worker = _free_port(), str(Path(__file__).parent / "multihost_worker.py")
    procs = [subprocess.Popen([sys.executable, worker, str(port), str(i), str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]  # fmt: skip
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    lines = [out.splitlines() for out, _ in outputs]
    for i in range(2):
        assert "prepared before the others started: True" in lines[i]
        for first in (True, False):
            for failing in (0, 1):
                other = f"opening the data failed on process {failing} of 2: no data on process {failing}"
                own = f"no data on process {failing}"
                expected = f"ValueError: {own}" if i == failing else f"TrainingError: {other}"
                assert f"fails on {failing}, zero first {first}: {expected}" in lines[i]
