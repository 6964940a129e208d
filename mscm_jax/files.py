"""Files written whole or not at all, for every layer (imports nothing from mscm_jax)."""

from __future__ import annotations

import os
from collections.abc import Callable

from etils import epath


def write_atomically(path: str | os.PathLike, write: Callable[[epath.Path], object]) -> None:
    """Calls `write(tmp)` on a temporary file beside `path`, then renames it to `path`.

    On a local file system the rename is atomic: a reader, or a crash, finds
    the old file or the new one, never part of one. The temporary name is
    unique to the process and keeps the suffix, from which PIL and matplotlib
    pick a format. `path` may be any `epath` location (gs://...).
    """
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp{path.suffix}"
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
