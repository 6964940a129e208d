"""Import published PyTorch checkpoints (CompressAI layout) into mscm-jax.

Architectures (`ARCHS`):
- `cheng2020-attn-gmm-multistage-2x2` / `-4x4`: the MSCM authors' models
  (Lin et al., ICASSP 2023, arXiv:2302.09263; docs/paper.md "The authors'
  checkpoint layout"): CompressAI's `Cheng2020Attention` transforms, a K = 3
  Gaussian mixture that rounds y itself, one masked 5x5 context convolution
  `multistage_context.gcm.{s}` (no bias) per stage with the `mscm2x2` /
  `mscm4x4-paper` patterns. Stage 0's `gcm.0` and `context_prediction.*` are
  unused by their model and checked, not imported.
- `cheng2020-attn`, `mbt2018`: CompressAI's serial context models (Minnen 2018,
  Cheng 2020): one Gaussian, rounding y - mean, a causal `MaskedConv2d` with bias.
- `mbt2018-mean`: CompressAI's mean-scale hyperprior (no context, no
  entropy-parameter network: the hyper-synthesis output is (scales, means)).

N and M are read from the weights' shapes (the authors' and CompressAI's
qualities 1-3 use N = M = 128). Layout conversions, each a short pure function
of numpy arrays: NCHW convolutions -> HWIO; transposed convolutions flipped and
transposed (`layers.ConvTranspose2d`); 1x1 convolutions of the entropy
parameter network -> dense (in, out); GDN's reparametrized beta/gamma unchanged
(its pedestal and bounds checked); the entropy bottleneck's matrices, biases,
factors unchanged and `quantiles[:, 0, 1]` kept as the rounding centre of z
(`ModelConfig.z_median = "stored"`); masked context weights multiplied by the
masks the schedule derives (`Schedule.context_kernel_mask`), after checking that
the checkpoint's masks give exactly that context (for the authors' models: the
stored mask AND the positions decoded before the stage, `multistage_context`):
a mismatch is an error, never a silent fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.model.compression_model import CompressionModel, Mode, ModelConfig
from mscm_jax.tools.torch_checkpoint import load_state_dict

Array = np.ndarray
StateDict = dict[str, Array]


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys, shapes or masks do not match the architecture."""


@dataclasses.dataclass(frozen=True)
class Arch:
    """What the weights alone do not say about a published model."""

    transform: str
    schedule: str
    context: str  # "multistage", "serial" or "none"
    rounding: str
    mixtures: bool  # K read from the entropy-parameter output (3KM channels)


ARCHS: dict[str, Arch] = {
    "cheng2020-attn-gmm-multistage-2x2": Arch("cheng2020-attn", "mscm2x2", "multistage", "y", True),
    "cheng2020-attn-gmm-multistage-4x4": Arch("cheng2020-attn", "mscm4x4-paper", "multistage", "y", True),
    "cheng2020-attn": Arch("cheng2020-attn", "serial", "serial", "y_minus_mean", False),
    "mbt2018": Arch("mbt2018", "serial", "serial", "y_minus_mean", False),
    "mbt2018-mean": Arch("mbt2018", "hyperprior", "none", "y_minus_mean", False),
}

# Constants of CompressAI's modules that our layers hard-code: checked when present.
PEDESTAL = (2.0**-18) ** 2
GDN_CONSTANTS = {
    "beta_reparam.pedestal": PEDESTAL,
    "beta_reparam.lower_bound.bound": (1e-6 + PEDESTAL) ** 0.5,
    "gamma_reparam.pedestal": PEDESTAL,
    "gamma_reparam.lower_bound.bound": 2.0**-18,
}
OTHER_CONSTANTS = {
    "entropy_bottleneck.likelihood_lower_bound.bound": 1e-9,
    "gaussian_conditional.likelihood_lower_bound.bound": 1e-9,
    "gaussian_conditional.lower_bound_scale.bound": 0.11,
    "gaussian_conditional.scale_bound": 0.11,
}
# Coding tables and targets derived by CompressAI's update(): we build our own.
DERIVED = (
    "entropy_bottleneck._offset",
    "entropy_bottleneck._quantized_cdf",
    "entropy_bottleneck._cdf_length",
    "entropy_bottleneck.target",
    "gaussian_conditional._offset",
    "gaussian_conditional._quantized_cdf",
    "gaussian_conditional._cdf_length",
    "gaussian_conditional.scale_table",
)
# Inherited from the serial model and unused by the MSCM authors' model.
UNUSED_MULTISTAGE = ("context_prediction.weight", "context_prediction.bias", "context_prediction.mask")


# --------------------------------------------------------------------------
# Layout conversions (pure: numpy in, numpy out).
# --------------------------------------------------------------------------


def conv_kernel(w: Array) -> Array:
    """`nn.Conv2d` weight (out, in, kh, kw) -> HWIO (cross-correlation both sides)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def deconv_kernel(w: Array) -> Array:
    """`nn.ConvTranspose2d` weight (in, out, kh, kw) -> the HWIO kernel of the
    equivalent stride-1 convolution over the dilated input (`layers.ConvTranspose2d`)."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))


def dense_kernel(w: Array) -> Array:
    """1x1 `nn.Conv2d` weight (out, in, 1, 1) -> dense (in, out)."""
    return np.ascontiguousarray(w[:, :, 0, 0].T)


# kind -> (torch params -> our params, our shapes -> torch shapes)
KINDS: dict[str, tuple[Callable[[StateDict], dict], Callable[[dict], dict]]] = {
    "conv": (
        lambda t: {"kernel": conv_kernel(t["weight"]), "bias": t["bias"]},
        lambda o: {"weight": tuple(np.array(o["kernel"])[[3, 2, 0, 1]]), "bias": o["bias"]},
    ),
    "deconv": (
        lambda t: {"kernel": deconv_kernel(t["weight"]), "bias": t["bias"]},
        lambda o: {"weight": tuple(np.array(o["kernel"])[[2, 3, 0, 1]]), "bias": o["bias"]},
    ),
    "dense": (
        lambda t: {"kernel": dense_kernel(t["weight"]), "bias": t["bias"]},
        lambda o: {"weight": (o["kernel"][1], o["kernel"][0], 1, 1), "bias": o["bias"]},
    ),
    "gdn": (
        lambda t: {"beta": t["beta"], "gamma": t["gamma"]},
        lambda o: {"beta": o["beta"], "gamma": o["gamma"]},
    ),
}


# --------------------------------------------------------------------------
# Key tables: (torch prefix, our path, kind).
# --------------------------------------------------------------------------

Entry = tuple[str, str, str]


def _residual(t: str, o: str) -> list[Entry]:
    return [(f"{t}.conv1", f"{o}/conv1", "conv"), (f"{t}.conv2", f"{o}/conv2", "conv")]


def _down(t: str, o: str) -> list[Entry]:
    return [*_residual(t, o), (f"{t}.gdn", f"{o}/gdn", "gdn"), (f"{t}.skip", f"{o}/skip", "conv")]


def _up(t: str, o: str) -> list[Entry]:
    return [
        (f"{t}.subpel_conv.0", f"{o}/subpel_conv/conv", "conv"),
        (f"{t}.conv", f"{o}/conv", "conv"),
        (f"{t}.igdn", f"{o}/igdn", "gdn"),
        (f"{t}.upsample.0", f"{o}/upsample/conv", "conv"),
    ]


def _attention(t: str, o: str) -> list[Entry]:
    out = [(f"{t}.conv_b.3", f"{o}/b_out", "conv")]
    for branch in "ab":
        for i in range(3):
            for j, layer in enumerate((0, 2, 4)):
                out.append((f"{t}.conv_{branch}.{i}.conv.{layer}", f"{o}/{branch}{i}_conv{j + 1}", "conv"))
    return out


def _cheng_entries() -> list[Entry]:
    g_a = ["down", "res", "down", "attn", "res", "down", "res", "conv", "attn"]
    g_s = ["attn", "res", "up", "res", "up", "attn", "res", "up", "res", "subpel"]
    builders = {"down": _down, "res": _residual, "up": _up, "attn": _attention}
    entries: list[Entry] = []
    for prefix, blocks in (("g_a", g_a), ("g_s", g_s)):
        counts: dict[str, int] = {}
        for i, block in enumerate(blocks):
            name = {"conv": "down", "subpel": "up"}.get(block, block)
            ours = f"{prefix}/{name}{counts.get(name, 0)}"
            counts[name] = counts.get(name, 0) + 1
            if block == "conv":
                entries.append((f"{prefix}.{i}", ours, "conv"))
            elif block == "subpel":
                entries.append((f"{prefix}.{i}.0", f"{ours}/conv", "conv"))
            else:
                entries += builders[block](f"{prefix}.{i}", ours)
    entries += [(f"h_a.{2 * i}", f"h_a/conv{i}", "conv") for i in range(5)]
    h_s = [
        ("h_s.0", "conv0"),
        ("h_s.2.0", "up0/conv"),
        ("h_s.4", "conv1"),
        ("h_s.6.0", "up1/conv"),
        ("h_s.8", "conv2"),
    ]
    return entries + [(t, f"h_s/{o}", "conv") for t, o in h_s]


def _mbt_entries() -> list[Entry]:
    entries: list[Entry] = []
    for i in range(7):
        kind = "conv" if i % 2 == 0 else "gdn"
        entries.append((f"g_a.{i}", f"g_a/{'conv' if i % 2 == 0 else 'gdn'}{i // 2}", kind))
        kind = "deconv" if i % 2 == 0 else "gdn"
        entries.append((f"g_s.{i}", f"g_s/{'deconv' if i % 2 == 0 else 'igdn'}{i // 2}", kind))
    entries += [(f"h_a.{2 * i}", f"h_a/conv{i}", "conv") for i in range(3)]
    entries += [
        ("h_s.0", "h_s/deconv0", "deconv"),
        ("h_s.2", "h_s/deconv1", "deconv"),
        ("h_s.4", "h_s/conv2", "conv"),
    ]
    return entries


def entries_for(arch: Arch) -> list[Entry]:
    """Every plainly converted module of `arch` (context and entropy bottleneck aside)."""
    entries = _cheng_entries() if arch.transform == "cheng2020-attn" else _mbt_entries()
    if arch.context != "none":
        entries += [
            (f"entropy_parameters.{2 * i}", f"context/entropy_parameters/dense{i}", "dense") for i in range(3)
        ]
    return entries


# --------------------------------------------------------------------------
# Sizes, config and the expected layout.
# --------------------------------------------------------------------------


def _shape(state: StateDict, key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointMismatchError(f"missing key {key!r}, which gives the model's size; is --arch right?")
    return tuple(state[key].shape)


def normalize_keys(state: StateDict) -> StateDict:
    """CompressAI >= 1.2 names the bottleneck's parameter lists `matrices.{i}`,
    `biases.{i}`, `factors.{i}`; the published checkpoints (and our tables) use
    `_matrix{i}`, `_bias{i}`, `_factor{i}`, as CompressAI's own loader maps them."""
    renamed = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if (
            len(parts) == 3
            and parts[0] == "entropy_bottleneck"
            and parts[1] in renamed
            and parts[2].isdigit()
        ):
            key = f"entropy_bottleneck.{renamed[parts[1]]}{parts[2]}"
        out[key] = value
    return out


def infer_config(arch_name: str, state: StateDict) -> ModelConfig:
    """The ModelConfig of a checkpoint of `arch_name`: N, M, K and z's filters from shapes."""
    arch = get_arch(arch_name)
    if arch.transform == "cheng2020-attn":
        n, m = _shape(state, "g_a.0.conv1.weight")[0], _shape(state, "g_a.7.weight")[0]
    else:
        n, m = _shape(state, "g_a.0.weight")[0], _shape(state, "g_a.6.weight")[0]
    k = 1
    if arch.mixtures:
        out = _shape(state, "entropy_parameters.4.weight")[0]
        if out % (3 * m):
            raise CheckpointMismatchError(f"entropy_parameters.4 has {out} outputs, not 3*K*M with M = {m}")
        k = out // (3 * m)
    layers = sum(1 for key in state if key.startswith("entropy_bottleneck._matrix"))
    filters = tuple(_shape(state, f"entropy_bottleneck._matrix{i}")[1] for i in range(layers - 1))
    return ModelConfig(
        transform=arch.transform, N=n, M=m, num_mixtures=k, schedule=arch.schedule, rounding=arch.rounding,
        z_filters=filters, z_median="stored", context_bias=arch.context == "serial",
        entropy_parameter_network=arch.context != "none",
    )  # fmt: skip


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[name]


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter shapes, flat ('g_a/conv0/kernel' -> shape), without computing anything."""
    model = CompressionModel(config)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    key = jax.random.PRNGKey(0)
    tree = jax.eval_shape(lambda x: model.init({"params": key, "noise": key}, x, Mode.TRAIN), x)
    flat = flax.traverse_util.flatten_dict(tree["params"], sep="/")
    return {k: tuple(v.shape) for k, v in flat.items()}


def expected_layout(arch_name: str, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a checkpoint of `arch_name` with `config`'s sizes must hold."""
    arch, ours = get_arch(arch_name), param_shapes(config)
    layout: dict[str, tuple[int, ...]] = {}
    for t, o, kind in entries_for(arch):
        sub = {name.removeprefix(o + "/"): s for name, s in ours.items() if name.startswith(o + "/")}
        sub = {name: s for name, s in sub.items() if "/" not in name}
        layout.update({f"{t}.{name}": tuple(s) for name, s in KINDS[kind][1](sub).items()})
    for name, s in ours.items():
        if name.startswith("entropy_bottleneck/") and name != "entropy_bottleneck/median":
            layout[f"entropy_bottleneck._{name.split('/')[1]}"] = s
    layout["entropy_bottleneck.quantiles"] = (config.N, 1, 3)
    m, window = config.M, (config.schedule_obj.kernel_size,) * 2
    if arch.context == "serial":
        for buffer in ("weight", "mask"):
            layout[f"context_prediction.{buffer}"] = (2 * m, m, *window)
        layout["context_prediction.bias"] = (2 * m,)
    elif arch.context == "multistage":
        s, n = config.schedule_obj.num_stages, config.schedule_obj.patch_size
        for i in range(s):
            layout[f"multistage_context.gcm.{i}.weight"] = (2 * m, m, *window)
            layout[f"multistage_context.gcm.{i}.mask"] = (2 * m, m, *window)
        for name in ("prev_latent_mask", "curr_latent_mask"):
            layout[f"multistage_context.{name}"] = (s, 1, 1, n, n)
    return layout


def check_layout(arch_name: str, config: ModelConfig, state: StateDict, limit: int = 8) -> None:
    """Raises CheckpointMismatchError listing the first missing, unexpected and mis-shaped keys."""
    layout = expected_layout(arch_name, config)
    optional = set(DERIVED) | set(OTHER_CONSTANTS)
    optional |= {
        f"{t}.{c}" for t, _, kind in entries_for(get_arch(arch_name)) if kind == "gdn" for c in GDN_CONSTANTS
    }
    if get_arch(arch_name).context == "multistage":
        optional |= set(UNUSED_MULTISTAGE)
    missing = sorted(set(layout) - set(state))
    unexpected = sorted(set(state) - set(layout) - optional)
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the checkpoint, {layout[k]} expected"
        for k in sorted(set(layout) & set(state))
        if tuple(state[k].shape) != layout[k]
    ]
    problems = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint does not match --arch {arch_name} (N={config.N}, M={config.M}, "
            f"K={config.num_mixtures}): " + "; ".join(problems)
        )
    for key, value in OTHER_CONSTANTS.items():
        _check_constant(state, key, value)
    for t, _, kind in entries_for(get_arch(arch_name)):
        if kind == "gdn":
            for name, value in GDN_CONSTANTS.items():
                _check_constant(state, f"{t}.{name}", value)


def _check_constant(state: StateDict, key: str, value: float) -> None:
    if key in state and not np.allclose(state[key], value, rtol=1e-5, atol=0):
        raise CheckpointMismatchError(f"{key} is {state[key].ravel()[:3]}, but mscm-jax uses {value:g}")


# --------------------------------------------------------------------------
# Context masks and weights.
# --------------------------------------------------------------------------


def _window_mask(mask: Array, key: str) -> Array:
    """(out, in, k, k) mask buffer -> (k, k) bool; it must not vary over channels."""
    window = mask[0, 0] != 0
    if not np.array_equal(mask != 0, np.broadcast_to(window, mask.shape)):
        raise CheckpointMismatchError(f"{key} differs between channels; mscm-jax masks windows, not channels")
    return window


def _mask_error(key: str, got: Array, want: Array, note: str = "") -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"{key} does not match the schedule's derived mask (Schedule.context_kernel_mask){note}: "
        f"checkpoint {got.astype(int).tolist()}, derived {want.astype(int).tolist()}"
    )


def decoded_taps(prev: Array, position: tuple[int, int], k: int) -> Array:
    """(k, k) bool: which window taps of the element at in-patch `position` read a
    position that `prev` (n, n: already decoded) marks, over the tiled patches."""
    n, half = prev.shape[0], k // 2
    rows = (position[0] + np.arange(-half, half + 1)) % n
    cols = (position[1] + np.arange(-half, half + 1)) % n
    return prev[rows[:, None], cols[None, :]]


def multistage_context(config: ModelConfig, state: StateDict) -> Array:
    """`context_kernel` (S - 1, k, k, M, 2M) from `multistage_context.*`, masks checked.

    Stage s (one in-patch position in the authors' 2x2 / 4x4 patterns) must
    have `curr_latent_mask[s] == (pattern == s)` and `prev_latent_mask[s] ==
    (pattern < s)`. The authors' stored `gcm.{s}.mask` holds more taps than the
    context: its centre tap and, for 2x2, the stage's own positions in the
    neighbouring patches (docs/paper.md, "The authors' checkpoint layout").
    Their forward multiplies the latent by the tiled `prev_latent_mask[s]`
    before the convolution, so what an element at in-patch position (i, j)
    reads is the stored mask AND the taps over decoded positions: that
    effective context must equal the derived `Schedule.context_kernel_mask()[i,
    j]` for every position of the stage (stage 0: empty), else the import
    fails. Our set s - 1 is `gcm.{s}.weight` times the derived mask (the union
    over the stage's positions), in HWIO: weights under taps that read zeros in
    their model are dropped, never imported.
    """
    schedule = config.schedule_obj
    pattern, derived = schedule.pattern, schedule.context_kernel_mask()
    k = schedule.kernel_size
    kernels = []
    for s in range(schedule.num_stages):
        for name, want in (("curr_latent_mask", pattern == s), ("prev_latent_mask", pattern < s)):
            got = state[f"multistage_context.{name}"][s, 0, 0] != 0
            if not np.array_equal(got, want):
                raise _mask_error(f"multistage_context.{name}[{s}]", got, want)
        prev = state["multistage_context.prev_latent_mask"][s, 0, 0] != 0
        key = f"multistage_context.gcm.{s}.mask"
        stored = _window_mask(state[key], key)
        context = np.zeros((k, k), bool)
        for i, j in np.argwhere(pattern == s):
            effective = stored & decoded_taps(prev, (i, j), k)
            if not np.array_equal(effective, derived[i, j]):
                note = (
                    f" at in-patch position ({i}, {j}), once ANDed with the positions decoded"
                    f" before stage {s} as the authors' forward does"
                )
                raise _mask_error(key, effective, derived[i, j], note)
            context |= derived[i, j]
        if s > 0:
            weight = state[f"multistage_context.gcm.{s}.weight"] * context
            kernels.append(conv_kernel(weight))
    return np.stack(kernels)


def serial_context(config: ModelConfig, state: StateDict) -> tuple[Array, Array]:
    """(`context_kernel` (1, k, k, M, 2M), `context_bias` (1, 2M)) of a serial model."""
    want = config.schedule_obj.context_kernel_mask()[0, 0]
    got = _window_mask(state["context_prediction.mask"], "context_prediction.mask")
    if not np.array_equal(got, want):
        raise _mask_error("context_prediction.mask", got, want)
    weight = state["context_prediction.weight"] * state["context_prediction.mask"]
    return conv_kernel(weight)[None], state["context_prediction.bias"][None]


# --------------------------------------------------------------------------
# The whole state dict.
# --------------------------------------------------------------------------


def convert_state_dict(arch_name: str, state: StateDict) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, params) of a CompressAI-layout state dict (numpy arrays by key)."""
    arch = get_arch(arch_name)
    state = normalize_keys(state)
    config = infer_config(arch_name, state)
    check_layout(arch_name, config, state)
    state = {k: np.asarray(v, np.float32) if v.dtype.kind == "f" else v for k, v in state.items()}
    flat: dict[str, Array] = {}
    for t, o, kind in entries_for(arch):
        torch_params = {k[len(t) + 1 :]: v for k, v in state.items() if k.startswith(t + ".")}
        flat.update({f"{o}/{name}": v for name, v in KINDS[kind][0](torch_params).items()})
    for key, value in state.items():
        name = key.removeprefix("entropy_bottleneck._")
        if name != key and name.rstrip("0123456789") in ("matrix", "bias", "factor"):
            flat[f"entropy_bottleneck/{name}"] = value
    flat["entropy_bottleneck/median"] = state["entropy_bottleneck.quantiles"][:, 0, 1]
    if arch.context == "multistage":
        flat["context/context_kernel"] = multistage_context(config, state)
    elif arch.context == "serial":
        flat["context/context_kernel"], flat["context/context_bias"] = serial_context(config, state)
    # (`hyperprior`: no context weights at all.)
    want = param_shapes(config)
    got = {k: tuple(v.shape) for k, v in flat.items()}
    if got != want:  # a bug in the tables above, not in the checkpoint
        diff = sorted(set(got.items()) ^ set(want.items()))[:6]
        raise AssertionError(f"converted parameters do not fill the model: {diff}")
    params = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return config, {"params": params}


# --------------------------------------------------------------------------
# Files: checkpoint in, training workdir out.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImportResult:
    config: ModelConfig
    workdir: str
    num_params: int
    z_median_max_abs_diff: float  # stored centre of z vs the density's median
    seconds: float


def write_workdir(workdir: str | os.PathLike, config: ModelConfig, params: Any, origin: dict) -> str:
    """A workdir every command reads (`train.load_workdir_params`): config.json,
    an Orbax checkpoint at step 0 (fresh optimizer state) and `imported_from.json`."""
    from mscm_jax.training.configs import base_config
    from mscm_jax.training.train import (
        TrainState,
        absolute_workdir,
        checkpoint_manager,
        make_optimizer,
        prepare_workdir,
        save_checkpoint,
    )

    path = absolute_workdir(workdir)
    if (path / "checkpoints").exists() and any((path / "checkpoints").iterdir()):
        raise ValueError(f"{path} already holds checkpoints; import into a new workdir")
    config_dict = base_config()
    config_dict.model = config.to_dict()
    prepare_workdir(path, config_dict)
    params = jax.device_put(params)
    tx = make_optimizer(config_dict.train, params)
    manager = checkpoint_manager(path, 1)
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {})
    save_checkpoint(manager, state, {"seed": config_dict.train.seed, "next_step": 0})
    manager.wait_until_finished()
    manager.close()
    (path / "imported_from.json").write_text(json.dumps(origin, indent=2, sort_keys=True))
    return str(path)


def import_checkpoint(
    checkpoint: str | os.PathLike, arch_name: str, workdir: str | os.PathLike
) -> ImportResult:
    """Reads `checkpoint`, converts it for `arch_name` and writes `workdir`."""
    started = time.perf_counter()
    state = load_state_dict(checkpoint)
    config, params = convert_state_dict(arch_name, state)
    model = CompressionModel(config)
    density = CompressionModel(dataclasses.replace(config, z_median="density"))
    stored = model.apply(params, method=CompressionModel.z_median)
    without = {"params": {**params["params"]}}
    without["params"]["entropy_bottleneck"] = {
        k: v for k, v in params["params"]["entropy_bottleneck"].items() if k != "median"
    }
    bisected = density.apply(without, method=CompressionModel.z_median)
    origin = {"checkpoint": os.path.abspath(checkpoint), "arch": arch_name, "tool": "mscm-jax import-torch"}
    path = write_workdir(workdir, config, params, origin)
    return ImportResult(
        config=config,
        workdir=path,
        num_params=sum(int(np.size(v)) for v in jax.tree.leaves(params)),
        z_median_max_abs_diff=float(jnp.max(jnp.abs(stored - bisected))),
        seconds=time.perf_counter() - started,
    )
