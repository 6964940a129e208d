"""Compiled programs: a new process runs them from their artifacts, untraced; LAPACK where called."""

import os
import subprocess
import sys

import numpy as np

# Runs the named programs on one 3 x 3 matrix; prints how many were traced, then each result.
WORKER = """
import sys
import jax.numpy as jnp
from mscm_jax.coding import programs

programs.enable_compilation_cache()
traced = []

def double(a):
    traced.append("double")
    return 2 * a

def factor(a):  # calls LAPACK on a CPU
    traced.append("factor")
    return jnp.linalg.cholesky(a @ a.T + 3 * jnp.eye(3))

run = programs.Programs({"double": double, "factor": factor})
results = [run(name, jnp.arange(9.0).reshape(3, 3)).tolist() for name in sys.argv[1:]]
print(traced)
print(results)
"""


def _run_programs(cache, *names):
    env = {**os.environ, "MSCM_JAX_CACHE_DIR": str(cache)}
    run = subprocess.run([sys.executable, "-c", WORKER, *names], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    traced, results = run.stdout.strip().splitlines()[-2:]
    return eval(traced), [np.array(r) for r in eval(results)]


def test_a_new_process_runs_the_programs_from_their_artifacts_untraced(tmp_path):
    a = np.arange(9.0).reshape(3, 3)
    expected = [2 * a, np.linalg.cholesky(a @ a.T + 3 * np.eye(3))]
    for traced_first in (["double", "factor"], []):  # the second process finds both artifacts
        traced, results = _run_programs(tmp_path, "double", "factor")
        assert traced == traced_first
        for result, value in zip(results, expected, strict=True):
            np.testing.assert_allclose(result, value, rtol=1e-5)
    # `factor` ran from its artifact: lowering still set LAPACK up for it (skipped for programs that
    # name no LAPACK target). A damaged artifact is traced again, not an error.
    (artifact,) = (tmp_path / "exported").glob("double-*.bin")
    artifact.write_bytes(b"not an artifact")
    traced, results = _run_programs(tmp_path, "double")
    assert traced == ["double"]
    np.testing.assert_allclose(results[0], 2 * a)


def test_only_the_lowering_thread_skips_the_linear_algebra_set_up(monkeypatch):
    # While one thread lowers a program without LAPACK, another thread's lowering (of a program that
    # may need LAPACK) still sets LAPACK up. (No "lapack" in this test's name: the exported module's
    # locations name it, and the check would find it there and set LAPACK up after all.)
    import threading

    import jax
    from jax._src.export import _export
    from jax._src.lax import linalg

    from mscm_jax.coding import programs

    set_ups = []
    monkeypatch.setattr(linalg, "initialize_lapack", lambda: set_ups.append(threading.current_thread().name))
    exported = jax.export.export(jax.jit(lambda a: 2 * a))(np.ones(3, np.float32))
    inside, release = threading.Event(), threading.Event()

    def lower_without_lapack():
        with programs._lapack_only_if_called(exported):
            _export._ensure_backends_initialized(("cpu",))  # what lowering calls: skipped here
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=lower_without_lapack, name="skipping")
    thread.start()
    assert inside.wait(30)
    _export._ensure_backends_initialized(("cpu",))  # this thread, meanwhile
    release.set()
    thread.join(30)
    assert set_ups == [threading.current_thread().name]
