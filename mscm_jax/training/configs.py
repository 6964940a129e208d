"""Training configs: a base `ml_collections` config, launch files, overrides.

A launch file (`launch/*.py`) defines `get_config(arg=None)` returning a
`ConfigDict`, usually `base_config()` with a few fields changed. It is named
on the command line as `PATH` or `PATH:ARG` (e.g. `launch/paper.py:mscm4x4-paper,q3`),
and single fields are overridden with `--config.train.batch_size=8`.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
from collections.abc import Sequence

import ml_collections
from etils import epath

from mscm_jax.model.compression_model import ModelConfig

# MSE lambdas of quality levels 1..6 (CompressAI's cheng2020 / mbt2018 models).
QUALITY_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483}

PARAMETER_GROUPS = {
    "analysis": ("g_a",),
    "synthesis": ("g_s",),
    "transforms": ("g_a", "g_s"),
    "hyperprior": ("h_a", "h_s", "entropy_bottleneck"),
    "context": ("context",),
}


class ConfigError(ValueError):
    """A config file, argument or override that cannot be used."""


def base_config() -> ml_collections.ConfigDict:
    """Every key a training run reads, with the paper's defaults."""
    c = ml_collections.ConfigDict()
    c.model = ModelConfig().to_dict()
    c.data = ml_collections.ConfigDict(
        {
            # "samples", "folder:PATH" or "tfds:NAME[/CONFIG]".
            "source": "samples",
            "eval_source": "",  # default: the held-out part of `source`.
            "eval_scenes": ("chelsea", "stereo_motorcycle"),  # held out of `samples`.
            "include_textures": False,  # add grass/gravel/brick (grey) to `samples`.
            "tfds_split": "train",
            "tfds_eval_split": "validation",
            "crop": 256,
            "eval_crop": 256,  # centre crop of eval images (0: whole images).
            "max_eval_images": 8,
            "workers": 4,
            "prefetch": 4,
        }
    )
    c.train = ml_collections.ConfigDict(
        {
            "seed": 0,
            "batch_size": 16,
            "total_steps": 500_000,
            "lmbda": QUALITY_LAMBDAS[4],
            "learning_rate": 1e-4,
            # Piecewise-constant decay: at these fractions of total_steps, x lr_decay.
            "lr_decay_at": (0.8, 0.95),
            "lr_decay": 0.1,
            "grad_clip": 1.0,
            "grad_accum_steps": 1,
            "ema_decay": 0.0,  # 0 disables the EMA of the weights.
            "freeze": (),  # parameter groups kept fixed: analysis, synthesis, hyperprior, ...
            "init_from": "",  # a workdir whose latest checkpoint initializes the model.
            "init_from_groups": (),  # groups taken from it (default: all).
            "max_nonfinite_in_row": 20,
            "log_every": 50,
            "eval_every": 5000,
            "checkpoint_every": 5000,
            "keep_checkpoints": 3,
        }
    )
    return c


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `PATH[:ARG]`, applies `--config.a.b=value` overrides, validates."""
    path, _, arg = spec.partition(":")
    file = epath.Path(path)
    if not file.exists():
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"mscm_jax_launch_{file.stem}", str(file))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config()")
    if arg and not inspect.signature(module.get_config).parameters:
        raise ConfigError(f"{path} takes no argument after ':', got {arg!r}; use --config {path}")
    config = module.get_config(arg) if arg else module.get_config()
    apply_overrides(config, overrides)
    validate(config)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, text = item.removeprefix("--").partition("=")
        if not sep or not key.startswith("config."):
            raise ConfigError(f"override {item!r} must look like --config.train.batch_size=8")
        set_field(config, key.removeprefix("config."), text)


def set_field(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Sets `a.b.c` from its text, converted to the type the field already has."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, name in enumerate([*parents, leaf]):
        keys = sorted(node.keys())
        if name not in keys:
            where = ".".join(["config", *dotted.split(".")[:i]])
            raise ConfigError(f"unknown config key {dotted!r}: {where} has keys {', '.join(keys)}")
        if name != leaf or i < len(parents):
            node = node[name]
    old = node[leaf]
    node[leaf] = _parse_like(old, text, dotted)


def _parse_like(old, text: str, key: str):
    if isinstance(old, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"config.{key} takes true or false, got {text!r}")
    if isinstance(old, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        if isinstance(old, (tuple, list)):  # a bare word list: a,b
            return tuple(x for x in text.split(",") if x)
        raise ConfigError(f"config.{key}: cannot parse {text!r} as {type(old).__name__}") from e
    if isinstance(old, float) and isinstance(value, int):
        value = float(value)
    if isinstance(old, (tuple, list)):
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    elif not isinstance(value, type(old)):
        raise ConfigError(f"config.{key} takes a {type(old).__name__}, got {text!r}")
    return value


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    return ModelConfig.from_dict(dict(config.model))


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unusable field."""
    expected = base_config()
    for section in ("model", "data", "train"):
        if section not in config:
            raise ConfigError(f"config has no '{section}' section")
        unknown = sorted(set(config[section].keys()) - set(expected[section].keys()))
        if unknown:
            raise ConfigError(
                f"unknown config keys config.{section}.{unknown[0]}; "
                f"valid: {', '.join(sorted(expected[section].keys()))}"
            )
    try:
        model_config(config)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    t = config.train
    groups = set(PARAMETER_GROUPS) | {k for v in PARAMETER_GROUPS.values() for k in v}
    for name in (*t.freeze, *t.init_from_groups):
        if name not in groups:
            raise ConfigError(f"unknown parameter group {name!r}; valid: {', '.join(sorted(groups))}")
    for name in ("batch_size", "total_steps", "grad_accum_steps", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints", "max_nonfinite_in_row"):  # fmt: skip
        if int(t[name]) < 1:
            raise ConfigError(f"config.train.{name} must be at least 1, got {t[name]}")
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(
            f"config.train.batch_size ({t.batch_size}) must be a multiple of "
            f"grad_accum_steps ({t.grad_accum_steps})"
        )
    for name in ("learning_rate", "lmbda", "grad_clip", "lr_decay"):  # 0 would train nothing (clip: to 0)
        if not float(t[name]) > 0:
            raise ConfigError(f"config.train.{name} must be positive, got {t[name]}")
    if not all(0 < f < 1 for f in t.lr_decay_at):
        raise ConfigError(
            f"config.train.lr_decay_at takes fractions of total_steps in (0, 1), got {t.lr_decay_at}"
        )
    if config.data.max_eval_images < 1 or config.data.eval_crop < 0:
        raise ConfigError(
            f"config.data.max_eval_images must be at least 1 and eval_crop at least 0 (0: whole images), "
            f"got {config.data.max_eval_images} and {config.data.eval_crop}"
        )
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"config.train.ema_decay must be in [0, 1), got {t.ema_decay}")
    if config.data.crop < 16 or config.data.crop % 16:
        raise ConfigError(f"config.data.crop must be a positive multiple of 16, got {config.data.crop}")
    source = config.data.source
    if not (source == "samples" or source.startswith(("folder:", "tfds:"))):
        raise ConfigError(f"config.data.source {source!r}: use samples, folder:PATH or tfds:NAME[/CONFIG]")


def param_groups(names: Sequence[str]) -> set[str]:
    """Top-level parameter keys of named groups (or of the keys themselves)."""
    return {key for name in names for key in PARAMETER_GROUPS.get(name, (name,))}


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)
