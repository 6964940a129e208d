"""Reading PyTorch state dicts into plain numpy arrays (no JAX imported here).

`load_state_dict(path)` reads a `.pth` / `.pth.tar` file with
`torch.load(weights_only=True)` (tensors and plain containers only: no code
from the file is run), unwraps a `{"state_dict": ...}` nesting and strips the
`module.` prefixes of `DataParallel` checkpoints. A `.npz` holding the same
key -> array mapping needs no PyTorch. PyTorch is an optional extra:
`pip install -e ".[torch]"`.

This module imports only numpy (and torch when a `.pth` is read), so the
PyTorch reference environment of the tests can load it by file path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class TorchMissingError(RuntimeError):
    """PyTorch is needed (to read a .pth checkpoint) and not installed."""


TORCH_MISSING = (
    'reading a PyTorch checkpoint needs PyTorch: install the optional extra with pip install -e ".[torch]" '
    '(or pip install "mscm-jax[torch]"), or give the state dict as a .npz of key -> array'
)


def unwrap_state_dict(obj: Any) -> dict[str, np.ndarray]:
    """The state dict inside `obj` as numpy arrays, keys without `module.` prefixes.

    Accepts a state dict or a training checkpoint `{"state_dict": ..., "epoch": ...}`
    (nested any number of times).
    """
    while isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a state dict (a mapping of tensors)")
    out = {}
    for key, value in obj.items():
        name = str(key)
        while name.startswith("module."):
            name = name[len("module.") :]
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray | np.generic):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        out[name] = np.asarray(value)
    return out


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `.pth` / `.pth.tar` (needs torch) or `.npz` state dict."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            return unwrap_state_dict({k: archive[k] for k in archive.files})
    try:
        import torch
    except ImportError as e:
        raise TorchMissingError(TORCH_MISSING) from e
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises several types for a bad or unsafe file
        raise ValueError(f"could not read {path} as a PyTorch checkpoint (weights only): {e}") from e
    return unwrap_state_dict(obj)
