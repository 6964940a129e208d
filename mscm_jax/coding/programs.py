"""Compiled programs: each function traced once, kept on disk, compiled per input shape, timed.

The codec's programs (`codec.Codec`) go through `Programs`: a function is
traced into a `jax.export` artifact, which is kept beside JAX's compilation
cache (`enable_compilation_cache`), so that a new process neither retraces
the Flax model (most of a cold start) nor recompiles it; the encoder and the
decoder then run programs built the same way from the same artifact.
Compilation and running are timed apart (`compile_seconds`, `run_seconds`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from mscm_jax.files import write_atomically


def enable_compilation_cache(directory: str | None = None) -> str:
    """Persist compiled XLA programs so that a second run skips JIT compilation.

    Default: $MSCM_JAX_CACHE_DIR or ~/.cache/mscm-jax/jax. Returns the directory.
    """
    directory = (
        directory or os.environ.get("MSCM_JAX_CACHE_DIR") or os.path.expanduser("~/.cache/mscm-jax/jax")
    )
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return directory


def _source_digest() -> str:
    """sha256 of the package's source: exported programs of other code are never reused."""
    digest = hashlib.sha256(jax.__version__.encode())
    for path in sorted(pathlib.Path(__file__).parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


_SKIPPING_LAPACK = threading.local()  # set while this thread lowers a program that calls no LAPACK


@functools.cache
def _lapack_hook_installed() -> bool:
    """Wraps jax.export's backend set-up once, so that a thread may skip LAPACK's (the hook is private:
    False if it is gone, and programs are then lowered as JAX does)."""
    from jax._src.export import _export

    ensure = getattr(_export, "_ensure_backends_initialized", None)
    if ensure is None:
        return False

    def ensure_unless_skipping(platforms):
        if not getattr(_SKIPPING_LAPACK, "active", False):
            ensure(platforms)

    _export._ensure_backends_initialized = ensure_unless_skipping
    return True


@contextlib.contextmanager
def _lapack_only_if_called(exported: jax.export.Exported) -> Iterator[None]:
    """Lowers an exported program without registering LAPACK unless it calls LAPACK.

    Lowering any `jax.export` program for a CPU registers jaxlib's LAPACK
    handlers first, which imports scipy.linalg: 0.4 s of a 2-core machine's
    cold `decompress` (measured), for programs that never solve or factor.
    The handlers are only needed by a module that names a `lapack_` target
    (the bytes are searched: a "lapack" in a source location only costs the
    set-up). Only this thread skips it: another may be lowering one that needs it.
    """
    if b"lapack" in exported.mlir_module_serialized or not _lapack_hook_installed():
        yield
        return
    _SKIPPING_LAPACK.active = True
    try:
        yield
    finally:
        _SKIPPING_LAPACK.active = False


class Programs:
    """Named functions, compiled per input shape on first call; compile and run seconds counted apart.

    `programs(name, *args)` runs `functions[name]`, compiled for the shapes and
    dtypes of `args` (and `donate[name]`: the argument numbers it may overwrite).
    `identity` names what the functions compute beyond their arguments (a
    model's config): artifacts are keyed by it, by the backend and by this
    package's source. Each call waits for its result, so that a phase's time
    is its own (JAX dispatches asynchronously) and `run_seconds` is the time
    inside compiled code.
    """

    def __init__(
        self, functions: dict[str, Callable], donate: dict[str, tuple[int, ...]] | None = None,
        identity: str = "", disabled_checks: Sequence[jax.export.DisabledSafetyCheck] = (),
    ):  # fmt: skip
        self._functions, self._donate, self._identity = functions, donate or {}, identity
        self._disabled_checks = list(disabled_checks)
        self._cache: dict[tuple, Any] = {}
        self.compile_seconds = self.run_seconds = 0.0

    def add(self, functions: dict[str, Callable]) -> None:
        """More functions to compile on first use (those of the same name are the same functions)."""
        self._functions = {**functions, **self._functions}

    def __call__(self, name: str, *args):
        key = (name, *((np.shape(a), getattr(a, "dtype", type(a))) for a in jax.tree.leaves(args)))
        compiled = self._cache.get(key)
        if compiled is None:
            start = time.perf_counter()
            compiled = self._cache[key] = self._compile(name, key, args)
            self.compile_seconds += time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        self.run_seconds += time.perf_counter() - start
        return out

    def _compile(self, name: str, key: tuple, args: tuple):
        exported, path = None, self._artifact_path(key, args)
        if path is not None and path.exists():
            try:
                exported = jax.export.deserialize(bytearray(path.read_bytes()))
            except Exception:  # a damaged or foreign artifact: trace again
                exported = None
        if exported is None:
            function = jax.jit(self._functions[name])
            exported = jax.export.export(function, disabled_checks=self._disabled_checks)(*args)
            if path is not None:
                data = exported.serialize()
                write_atomically(path, lambda tmp: tmp.write_bytes(data))
        call = jax.jit(exported.call, donate_argnums=self._donate.get(name, ()))
        with _lapack_only_if_called(exported):
            return call.lower(*args).compile()

    def _artifact_path(self, key: tuple, args: tuple) -> pathlib.Path | None:
        what = f"{self._identity}|{jax.default_backend()}|{key}|{jax.tree.structure(args)}"
        return artifact_path(key[0], what, ".bin")


def artifact_path(kind: str, what: str, suffix: str) -> pathlib.Path | None:
    """Where a derived artifact of `what` (a program, a shape table) is kept on disk.

    Beside the compilation cache (`enable_compilation_cache`), keyed by `what`
    and this package's source; None when no cache directory is set.
    """
    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        return None
    digest = hashlib.sha256(f"{_SOURCE_DIGEST}|{what}".encode()).hexdigest()[:32]
    return pathlib.Path(directory) / "exported" / f"{kind}-{digest}{suffix}"


_SOURCE_DIGEST = _source_digest()
