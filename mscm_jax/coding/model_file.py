"""Exported models: one self-contained `.mscm-model` file, safe to receive from strangers.

Layout: the 12 bytes `b"MSCM-MODEL\\0\\0"`, a format version (u8, 1), then one
MessagePack map (flax.serialization's encoding: numpy arrays as raw bytes
with dtype and shape; no pickle, so reading a file cannot run code):

    config        JSON of the ModelConfig (transform, N, M, K, schedule, rounding, ...)
    schedule      the stage pattern as JSON (null for serial), for readers of the file
    fingerprint   sha256 hex of config + parameters (`compression_model.model_fingerprint`)
    params        the parameter tree (float32 arrays)
    z_cdf         (N, 2T+2) int32: z's integer CDF tables (`integer_cdf.quantize_pmf`), so
                  that every decoder codes z with the very tables of the encoder
    coder         the file format and coder id the tables are for
    integer       optional: the integer entropy-parameter path (`integer_path.to_state`:
                  int8 weights, int32 biases, shifts and limits, per-channel exponents);
                  files coded with it decode on every backend
    source, step, created_by

Reading checks the magic, version, keys, parameter shapes against the
config, and recomputes the fingerprint, so a damaged file is an error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import serialization

from mscm_jax.coding import bitstream, integer_cdf, integer_path
from mscm_jax.coding.programs import artifact_path
from mscm_jax.files import write_atomically
from mscm_jax.model.compression_model import ModelConfig, init_model

MAGIC = b"MSCM-MODEL\0\0"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that is damaged, of another format, or of a newer version."""


def write_model_file(codec, path: str | os.PathLike) -> int:
    """Writes `codec`'s model to `path` (atomically); returns the size in bytes."""
    from mscm_jax import __version__

    schedule = codec.schedule
    content = {
        "config": json.dumps(codec.config.to_dict(), sort_keys=True),
        "schedule": None if schedule.is_serial else json.dumps(np.asarray(schedule.pattern).tolist()),
        "fingerprint": codec.fingerprint,
        "params": jax.tree.map(lambda a: np.asarray(a, np.float32), codec.params),
        "z_cdf": codec.z_cdf,
        "coder": f"format {bitstream.FORMAT_VERSION}, coder {codec.coder}",
        "source": codec.source,
        "step": -1 if codec.step is None else int(codec.step),
        "created_by": f"mscm-jax {__version__}",
    }
    if codec.integer is not None:
        content["integer"] = integer_path.to_state(codec.integer)
    data = MAGIC + bytes([VERSION]) + serialization.msgpack_serialize(content)
    write_atomically(path, lambda tmp: tmp.write_bytes(data))
    return len(data)


def _shape_table(params: Any) -> dict[str, list[int]]:
    return {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in
            jax.tree_util.tree_flatten_with_path(params)[0]}  # fmt: skip


def _expected_shapes(config: ModelConfig) -> dict[str, list[int]]:
    """Every parameter's shape in a model of `config`, by path.

    Tracing the model's initialization takes a second or more, a good part of
    a cold start: the table is kept beside the compiled programs.
    """
    path = artifact_path("shapes", json.dumps(config.to_dict(), sort_keys=True), ".json")
    if path is not None and path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    shapes = _shape_table(jax.eval_shape(lambda key: init_model(config, key)[1], jax.random.PRNGKey(0)))
    if path is not None:
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(shapes)))
    return shapes


def read_model_file(path: str | os.PathLike):
    """The `Codec` of a model file; ModelFileError if it is not a valid one."""
    from mscm_jax.coding.codec import Codec

    data = epath.Path(path).read_bytes()
    name = os.fspath(path)
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1:
        raise ModelFileError(f"{name} is not an mscm-jax model file (bad magic bytes)")
    version = data[len(MAGIC)]
    if version != VERSION:
        raise ModelFileError(f"{name}: model file version {version}; this mscm-jax reads version {VERSION}")
    try:
        content = serialization.msgpack_restore(data[len(MAGIC) + 1 :])
    except Exception as e:  # msgpack raises several types on damaged input
        raise ModelFileError(f"{name}: damaged model file ({type(e).__name__}: {e})") from None
    missing = {"config", "fingerprint", "params"} - set(content if isinstance(content, dict) else ())
    if missing:
        raise ModelFileError(f"{name}: damaged model file (missing {sorted(missing)})")
    try:
        config = ModelConfig.from_dict(json.loads(content["config"]))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{name}: invalid model config: {e}") from None
    params = content["params"]
    if not isinstance(params, dict) or _expected_shapes(config) != _shape_table(params):
        raise ModelFileError(f"{name}: parameters do not match the model config {config}")
    integer = None
    if "integer" in content:
        try:
            integer = integer_path.from_state(content["integer"], config)
        except ValueError as e:
            raise ModelFileError(f"{name}: {e}") from None
    z_cdf = _z_cdf(content, config, name)
    step = int(content.get("step", -1))
    codec = Codec(config, params, z_cdf, source=name, step=None if step < 0 else step, integer=integer)
    if codec.fingerprint != content["fingerprint"]:  # the Codec computes it once, from what was read
        raise ModelFileError(f"{name}: fingerprint mismatch: the parameters are damaged")
    return codec


def _z_cdf(content: dict, config: ModelConfig, name: str) -> np.ndarray | None:
    """The stored integer z tables, checked; from a version-1 file's float tables, made integer."""
    if "z_cdf" not in content:
        if "z_tables" not in content:
            raise ModelFileError(f"{name}: damaged model file (no z tables)")
        pmf = np.asarray(content["z_tables"]["pmf"], np.float32)
        if pmf.ndim != 2 or pmf.shape[0] != config.N or not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
            raise ModelFileError(f"{name}: damaged z tables (shape {pmf.shape})")
        return integer_cdf.quantize_pmf(pmf)
    cdf = np.asarray(content["z_cdf"])
    widths = (2 * np.arange(integer_cdf.MAX_HALF_WIDTH + 1) + 2).tolist()
    valid = (
        cdf.dtype == np.int32 and cdf.ndim == 2 and cdf.shape[0] == config.N and cdf.shape[1] in widths
        and np.all(cdf[:, 0] == 0) and np.all(cdf[:, -1] == integer_cdf.TOTAL)
        and np.all(np.diff(cdf, axis=1) >= 1)
    )  # fmt: skip
    if not valid:
        raise ModelFileError(f"{name}: damaged z tables (shape {cdf.shape}, dtype {cdf.dtype})")
    return cdf
