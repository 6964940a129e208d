"""Import of PyTorch checkpoints (mscm_jax.tools.torch_import), issue 6.

- Parity with CompressAI 1.2.8 (`mbt2018`, `mbt2018-mean`, `cheng2020-attn`):
  a separate PyTorch venv (tests/torch_reference/setup_env.sh, made on first
  use under $MSCM_JAX_TORCH_VENV or ~/.cache/mscm-jax/torch-venv) runs
  tests/torch_reference/compressai_reference.py, which saves a random-weight
  model's checkpoint and its outputs; we import the checkpoint and compare.
  A setup failure fails these tests; MSCM_JAX_SKIP_TORCH_PARITY=1 opts out
  (the `torch_python` fixture, tests/conftest.py).
- The MSCM authors' layout (not in CompressAI): state dicts built from
  tests/torch_reference/cheng2020-attn-gmm-multistage-*.state_dict.txt
  (their key/shape listings) at a small M, with masks written here from
  docs/paper.md's facts (stored masks wider than the context), checked key by key and
  stage by stage.
"""

from __future__ import annotations

import functools
import pathlib
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mscm_jax.cli import main
from mscm_jax.coding.codec import Codec
from mscm_jax.model.compression_model import CompressionModel, Mode
from mscm_jax.model.context import StageKernel, stage_context
from mscm_jax.model.schedules import get_schedule
from mscm_jax.tools.torch_checkpoint import load_state_dict, unwrap_state_dict
from mscm_jax.tools.torch_import import (
    ARCHS,
    UNUSED_MULTISTAGE,
    CheckpointMismatchError,
    convert_state_dict,
    entries_for,
    normalize_keys,
)
from mscm_jax.training.train import load_workdir_params

HERE = pathlib.Path(__file__).parent / "torch_reference"

# --------------------------------------------------------------------------
# Parity with CompressAI.
# --------------------------------------------------------------------------


@functools.cache
def _reference(python: str, arch: str, out: str) -> pathlib.Path:
    sizes = {"cheng2020-attn": ["--N", "16"]}.get(arch, ["--N", "16", "--M", "24"])
    cmd = [python, str(HERE / "compressai_reference.py"), "--arch", arch, "--out", out, *sizes]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    print(f"\n[reference] {result.stdout.strip()}")
    return pathlib.Path(out)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("arch", ["mbt2018", "mbt2018-mean", "cheng2020-attn"])
def test_parity_with_compressai(arch, torch_python, tmp_path_factory):
    out = _reference(str(torch_python), arch, str(tmp_path_factory.mktemp(arch)))
    ref = np.load(out / "reference.npz")
    started = time.perf_counter()
    # state_dict.npz is the .pth.tar as our reader read it in the torch venv.
    config, params = convert_state_dict(arch, load_state_dict(out / "state_dict.npz"))
    seconds = time.perf_counter() - started
    model = CompressionModel(config)
    x = jnp.asarray(ref["x"])
    y = model.apply(params, x, method=CompressionModel.analysis)
    z = model.apply(params, y, method=CompressionModel.hyper_analysis)
    median = model.apply(params, method=CompressionModel.z_median)
    z_hat = jnp.round(z - median) + median
    hyper = model.apply(params, z_hat, method=CompressionModel.hyper_synthesis)
    result = jax.jit(lambda p, x: model.apply(p, x, Mode.EVAL))(params, x)
    bits = float(-np.log2(np.asarray(result.y_likelihoods, np.float64)).sum() + result.z_bits[0])
    ref_bits = float(ref["y_bits"] + ref["z_bits"])
    diffs = {
        "y": _max_diff(y, ref["y"]),
        "z": _max_diff(z, ref["z"]),
        "z_hat": _max_diff(z_hat, ref["z_hat"]),
        "hyper": _max_diff(hyper, ref["hyper"]),
        "y_hat": _max_diff(result.y_hat, ref["y_hat"]),
        "x_hat": _max_diff(result.x_hat, ref["x_hat"]),
        "x_hat_decoded": _max_diff(np.clip(result.x_hat, 0, 1), ref["x_hat_decoded"]),
    }
    rel_bits = abs(bits - ref_bits) / ref_bits
    print(
        f"\n[parity {arch}] " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
        + f", bits {bits:.2f} vs {ref_bits:.2f} (rel {rel_bits:.2e}), convert {seconds:.2f} s"
    )  # fmt: skip
    assert np.std(ref["y"]) > 1 and np.mean(ref["y_hat"] != 0) > 0.5  # a latent worth comparing
    for name in ("y", "z", "hyper", "x_hat", "x_hat_decoded"):
        assert diffs[name] <= 1e-3, (name, diffs)
    assert diffs["z_hat"] <= 1e-4 and diffs["y_hat"] <= 1e-4, diffs  # same rounding decisions
    assert rel_bits <= 1e-3


def test_pth_reader_with_torch(torch_python, tmp_path_factory):
    """The nested, module.-prefixed .pth.tar read by torch.load(weights_only) gave state_dict.npz
    (checked inside the reference script); here: it imports end to end through the CLI."""
    out = _reference(str(torch_python), "mbt2018", str(tmp_path_factory.mktemp("mbt2018-cli")))
    state = load_state_dict(out / "state_dict.npz")
    assert "g_a.0.weight" in state and not any(k.startswith("module.") for k in state)
    assert any(k.startswith("entropy_bottleneck.matrices.") for k in state)  # CompressAI 1.2 names


# --------------------------------------------------------------------------
# The MSCM authors' layout, from their key/shape listings.
# --------------------------------------------------------------------------

PAPER_COUNTS = {  # context positions each stage effectively sees (docs/paper.md)
    "cheng2020-attn-gmm-multistage-2x2": [0, 6, 10, 16],
    "cheng2020-attn-gmm-multistage-4x4": [0, 1, 2, 4, 5, 8, 12, 9, 11, 15, 17, 18, 21, 22, 23, 24],
}
STORED_COUNTS = {  # taps of the gcm.{s}.mask buffers their code writes (docs/paper.md)
    "cheng2020-attn-gmm-multistage-2x2": [9, 15, 19, 25],
    "cheng2020-attn-gmm-multistage-4x4": [1, 2, 3, 5, 6, 9, 13, 10, 12, 16, 18, 19, 22, 23, 24, 25],
}


def authors_masks(pattern: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored gcm window masks (S, k, k), prev (S, n, n), curr (S, n, n)) as the authors' code
    writes them, with loops (independent of Schedule.context_kernel_mask and of torch_import).

    Their stage-s mask is a view into a scratch board of tiled patches holding the positions
    decoded before s, filled with the current position before the convolution is built: so
    every copy of the stage's own position in the board is on too (the centre tap, and for
    2x2 the same-stage positions of the neighbouring patches, at distance 2).
    """
    n, stages, half = pattern.shape[0], int(pattern.max()) + 1, k // 2
    stored = np.zeros((stages, k, k), np.float32)
    for s in range(stages):
        ((i, j),) = np.argwhere(pattern == s)  # one position per stage in their patterns
        board = np.zeros((n * k, n * k), np.float32)  # tiled patches; the element at (n half + i, n half + j)
        for r in range(n * k):
            for c in range(n * k):
                if pattern[r % n, c % n] < s:  # decoded before stage s
                    board[r, c] = 1
                if pattern[r % n, c % n] == s:  # "filled with the current position"
                    board[r, c] = 1
        stored[s] = board[n * half + i - half :, n * half + j - half :][:k, :k]
    prev = np.stack([(pattern < s) for s in range(stages)]).astype(np.float32)
    curr = np.stack([(pattern == s) for s in range(stages)]).astype(np.float32)
    return stored, prev, curr


def read_masks(stored: np.ndarray, prev: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """(S, k, k): the taps the authors' forward really reads at each stage's element, stored mask
    AND decoded (it multiplies the latent by the tiled prev_latent_mask[s] before the conv)."""
    n, k = pattern.shape[0], stored.shape[-1]
    out = np.zeros_like(stored)
    for s in range(stored.shape[0]):
        ((i, j),) = np.argwhere(pattern == s)
        for a in range(k):
            for b in range(k):
                decoded = prev[s, (i + a - k // 2) % n, (j + b - k // 2) % n]
                out[s, a, b] = stored[s, a, b] * decoded
    return out


def authors_state_dict(arch: str, m: int = 8, seed: int = 0, pattern=None) -> dict[str, np.ndarray]:
    """A random state dict in the authors' layout at N = M = m (their listing scaled down).

    As their code writes it: stored gcm masks (`authors_masks`, more taps than the context)
    over random weights that are non-zero under every tap, and the serial model's
    `context_prediction.*` (weights, bias, causal mask) that their model inherits unused.
    """
    listing = (HERE / f"{arch}.state_dict.txt").read_text().splitlines()[1:]
    scale = {192: m, 96: m // 2, 384: 2 * m, 768: 4 * m, 288: 3 * m // 2, 1152: 6 * m}
    scale |= {640: m * 10 // 3, 512: m * 8 // 3, 1728: 9 * m}
    rng = np.random.default_rng(seed)
    pattern = get_schedule(ARCHS[arch].schedule).pattern if pattern is None else np.asarray(pattern)
    stored, prev, curr = authors_masks(pattern)
    state = {}
    for line in listing:
        key, dtype, shape_text = line.split("\t")
        shape = tuple(scale.get(int(d), int(d)) for d in re.findall(r"\d+", shape_text))
        value = (0.1 * rng.standard_normal(shape)).astype(dtype)
        if key.endswith("pedestal"):
            value[:] = 2.0**-36
        elif "beta_reparam.lower_bound" in key:
            value[:] = (1e-6 + 2.0**-36) ** 0.5
        elif "gamma_reparam.lower_bound" in key:
            value[:] = 2.0**-18
        elif key.endswith(".beta"):
            value = np.sqrt(1.0 + rng.uniform(0, 0.5, shape)).astype(dtype)
        elif key.endswith(".gamma"):
            value = np.sqrt(0.1 * np.eye(shape[0]) + 0.01 * rng.uniform(size=shape)).astype(dtype)
        elif key == "entropy_bottleneck.quantiles":
            value = np.stack([-10 + 0 * value[:, 0, 0], value[:, 0, 1], 10 + 0 * value[:, 0, 0]], -1)[:, None]
        elif "bound" in key:  # the likelihood and scale bounds
            value[:] = 1e-9 if "likelihood" in key else 0.11
        elif match := re.fullmatch(r"multistage_context\.gcm\.(\d+)\.mask", key):
            value = np.broadcast_to(stored[int(match[1])], shape).copy()
        elif key == "context_prediction.mask":  # CompressAI's MaskedConv2d, type A
            value = np.broadcast_to((np.arange(25) < 12).reshape(5, 5), shape).astype(dtype)
        elif key.endswith("latent_mask"):
            value = (prev if "prev" in key else curr)[:, None, None]
        state[key] = value
    return state


def _pattern(arch: str) -> np.ndarray:
    return get_schedule(ARCHS[arch].schedule).pattern


def _read_masks(arch: str) -> np.ndarray:
    stored, prev, _ = authors_masks(_pattern(arch))
    return read_masks(stored, prev, _pattern(arch))


def effective_only(arch: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` with each gcm mask cut to the taps the authors' forward reads and the weights
    under the other taps zeroed: the model their checkpoint really is, with nothing extra."""
    out = dict(state)
    for s, mask in enumerate(_read_masks(arch)):
        out[f"multistage_context.gcm.{s}.mask"] = np.broadcast_to(
            mask, state[f"multistage_context.gcm.{s}.mask"].shape
        ).copy()
        out[f"multistage_context.gcm.{s}.weight"] = state[f"multistage_context.gcm.{s}.weight"] * mask
    return out


@pytest.mark.parametrize("arch", list(PAPER_COUNTS))
def test_authors_masks_have_the_papers_counts(arch):
    stored, prev, _ = authors_masks(_pattern(arch))
    assert stored.sum((1, 2)).astype(int).tolist() == STORED_COUNTS[arch]
    read = read_masks(stored, prev, _pattern(arch))
    assert read.sum((1, 2)).astype(int).tolist() == PAPER_COUNTS[arch]
    extra = (stored - read).sum((1, 2)).astype(int).tolist()
    assert extra == ([9] * 4 if arch.endswith("2x2") else [1] * 16)  # centre (+ distance-2 copies)
    assert np.all(stored[:, 2, 2] == 1) and np.all(read[:, 2, 2] == 0)


def _flat(params) -> dict[str, np.ndarray]:
    import flax

    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params["params"], sep="/").items()}


@pytest.mark.parametrize("arch", list(PAPER_COUNTS))
def test_authors_layout_key_by_key(arch):
    state = authors_state_dict(arch)
    config, params = convert_state_dict(arch, state)
    stages = len(PAPER_COUNTS[arch])
    assert (config.N, config.M, config.num_mixtures, config.rounding) == (8, 8, 3, "y")
    assert config.schedule == ARCHS[arch].schedule and config.z_filters == (3, 3, 3, 3)
    flat = _flat(params)
    rng = np.random.default_rng(1)
    used = set()
    for t, o, kind in entries_for(ARCHS[arch]):
        w, b = state.get(f"{t}.weight"), state.get(f"{t}.bias")
        if kind == "gdn":
            assert np.array_equal(flat[f"{o}/beta"], state[f"{t}.beta"])
            assert np.array_equal(flat[f"{o}/gamma"], state[f"{t}.gamma"])  # (out, in) both sides
            used |= {f"{t}.beta", f"{t}.gamma"}
            continue
        kernel = flat[f"{o}/kernel"]
        for _ in range(5):  # element by element, from the definitions
            if kind == "dense":
                oc, ic = rng.integers(w.shape[0]), rng.integers(w.shape[1])
                assert kernel[ic, oc] == w[oc, ic, 0, 0]
            else:
                oc, ic, a, c = (rng.integers(d) for d in w.shape)
                assert kernel[a, c, ic, oc] == w[oc, ic, a, c], (t, o)
        assert np.array_equal(flat[f"{o}/bias"], b)
        used |= {f"{t}.weight", f"{t}.bias"}
    for name in ("matrix", "bias", "factor"):
        for i in range(5):
            if f"entropy_bottleneck._{name}{i}" in state:
                assert np.array_equal(
                    flat[f"entropy_bottleneck/{name}{i}"], state[f"entropy_bottleneck._{name}{i}"]
                )
                used.add(f"entropy_bottleneck._{name}{i}")
    assert np.array_equal(flat["entropy_bottleneck/median"], state["entropy_bottleneck.quantiles"][:, 0, 1])
    kernels = flat["context/context_kernel"]
    assert kernels.shape == (stages - 1, 5, 5, 8, 16)
    read = _read_masks(arch)
    for s in range(1, stages):  # stage s's gcm lands in our set s - 1, cut to the taps it reads
        w = state[f"multistage_context.gcm.{s}.weight"]
        extra = (state[f"multistage_context.gcm.{s}.mask"][0, 0] != 0) & (read[s] == 0)
        assert extra.any() and np.all(w[:, :, extra] != 0)  # stored taps their forward reads as zeros
        assert np.array_equal(kernels[s - 1], (w * read[s]).transpose(2, 3, 1, 0))
        used.add(f"multistage_context.gcm.{s}.weight")
    # Every float weight the model uses was imported; the rest are masks, tables and unused sets.
    rest = sorted(k for k in set(state) - used if state[k].dtype.kind == "f")
    allowed = re.compile(
        r"(.*(mask|pedestal|bound|quantiles|target|scale_table|scale_bound)|multistage_context\.gcm\.0\.weight"
        r"|context_prediction\.(weight|bias))$"
    )
    assert [k for k in rest if not allowed.fullmatch(k)] == []


def _torch_conv_context(y_hat: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """PyTorch `conv2d(y, weight, padding=2)` in numpy, NHWC in and out; weight (out, in, 5, 5)."""
    b, h, w, _ = y_hat.shape
    padded = np.pad(y_hat, ((0, 0), (2, 2), (2, 2), (0, 0)))
    out = np.zeros((b, h, w, weight.shape[0]))
    for a in range(5):
        for c in range(5):
            out += np.einsum("bhwi,oi->bhwo", padded[:, a : a + h, c : c + w], weight[:, :, a, c])
    return out


@pytest.mark.parametrize("arch", list(PAPER_COUNTS))
def test_authors_context_stage_by_stage(arch):
    """Our stage function on the imported kernels equals the authors' forward at that stage's
    elements: the latent times the tiled prev_latent_mask[s], then the conv with the stored mask
    (wider than the context) over weights that are non-zero under every tap."""
    state = authors_state_dict(arch, seed=2)
    config, params = convert_state_dict(arch, state)
    schedule = config.schedule_obj
    plan = schedule.stage_plan(8, 8)
    y_hat = np.random.default_rng(3).integers(-3, 4, (1, 8, 8, 8)).astype(np.float32)
    y_hat[y_hat == 0] = 5  # every element non-zero, so a tap read where it should not be shows
    kernels = params["params"]["context"]["context_kernel"]
    for s in range(1, schedule.num_stages):
        weight = state[f"multistage_context.gcm.{s}.weight"] * state[f"multistage_context.gcm.{s}.mask"]
        decoded = np.tile(state["multistage_context.prev_latent_mask"][s, 0, 0], (8 // plan.stride,) * 2)
        want = _torch_conv_context(y_hat * decoded[None, :, :, None], weight)
        kernel = StageKernel.of_window(plan, jnp.asarray(kernels[s - 1]), jnp.int32(s))
        got = np.asarray(stage_context(plan, kernel, jnp.int32(s), jnp.asarray(y_hat)))
        ((i, j),) = np.argwhere(schedule.pattern == s)
        n = schedule.patch_size
        np.testing.assert_allclose(got[0], want[:, i::n, j::n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", list(PAPER_COUNTS))
def test_authors_extra_taps_are_not_imported(arch):
    """Their stored masks' extra taps (centre, same-stage copies) read zeros in their forward:
    the import equals that of the checkpoint cut to the taps it reads, weights there zeroed;
    so do the likelihoods of the imported model."""
    state = authors_state_dict(arch, m=4, seed=4)
    reference = effective_only(arch, state)
    changed = [k for k in state if not np.array_equal(state[k], reference[k])]
    assert len(changed) == 2 * len(PAPER_COUNTS[arch])  # every stage's mask and weights differ
    config, params = convert_state_dict(arch, state)
    _, want = convert_state_dict(arch, reference)
    flat, flat_want = _flat(params), _flat(want)
    assert flat.keys() == flat_want.keys()
    assert all(np.array_equal(flat[k], flat_want[k]) for k in flat)
    model = CompressionModel(config)
    x = jnp.asarray(np.random.default_rng(5).uniform(size=(1, 64, 64, 3)), jnp.float32)
    likelihoods = jax.jit(lambda p, x: model.apply(p, x, Mode.EVAL).y_likelihoods)
    np.testing.assert_array_equal(likelihoods(params, x), likelihoods(want, x))


def test_mask_mismatch_is_an_error():
    arch = "cheng2020-attn-gmm-multistage-2x2"  # stage 2 at in-patch (1, 0); stage 3 at (1, 1)
    state = authors_state_dict(arch)
    state["multistage_context.gcm.2.mask"][:, :, 1, 2] = 0  # (-1, 0): a stage-0 position, context
    with pytest.raises(
        CheckpointMismatchError, match=r"gcm\.2\.mask does not match .* at in-patch position \(1, 0\)"
    ):
        convert_state_dict(arch, state)
    # Taps over positions not decoded before the stage read zeros: on or off, the same import.
    state = authors_state_dict(arch)
    state["multistage_context.gcm.2.mask"][:, :, 0, 0] = 0  # (-2, -2): stage 2, a copy of the centre
    state["multistage_context.gcm.2.mask"][:, :, 2, 3] = 1  # (0, 1): stage 3
    _, got = convert_state_dict(arch, state)
    _, want = convert_state_dict(arch, authors_state_dict(arch))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
    state = authors_state_dict(arch)
    state["multistage_context.gcm.3.mask"][1, 0, 2, 1] = 0  # a context tap, off in one channel
    with pytest.raises(CheckpointMismatchError, match="differs between channels"):
        convert_state_dict(arch, state)


def test_authors_context_prediction_is_not_imported():
    """Their checkpoints carry the serial model's `context_prediction.*` (weights, bias, causal
    mask), which their model never uses: with them, without them or with other values, one import."""
    arch = "cheng2020-attn-gmm-multistage-2x2"
    state = authors_state_dict(arch, m=4)
    assert sorted(k for k in state if k.startswith("context_prediction.")) == sorted(UNUSED_MULTISTAGE)
    assert np.all(state["context_prediction.weight"] != 0)
    _, want = convert_state_dict(arch, state)
    without = {k: v for k, v in state.items() if not k.startswith("context_prediction.")}
    other = {**state, "context_prediction.weight": state["context_prediction.weight"] + 1.0}
    other["context_prediction.bias"] = other["context_prediction.bias"] - 1.0
    for variant in (without, other):
        _, got = convert_state_dict(arch, variant)
        assert all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
        )


def test_authors_training_checkpoint_pth_tar(torch_python, tmp_path):
    """A `.pth.tar` as their training script saves it: the model under "state_dict" (keys
    `module.`-prefixed, from DataParallel) beside epoch, loss, two Adam optimizers' and a
    scheduler's states. torch_checkpoint reads it (torch.load(weights_only=True), in the torch
    venv) as exactly the state dict, which imports as the state dict itself does."""
    arch = "cheng2020-attn-gmm-multistage-4x4"
    state = authors_state_dict(arch, m=4)
    np.savez(tmp_path / "state.npz", **state)
    paths = [tmp_path / name for name in ("state.npz", "checkpoint.pth.tar", "read.npz")]
    cmd = [str(torch_python), str(HERE / "authors_checkpoint.py"), *map(str, paths), "--prefix", "module."]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    print(f"\n[authors checkpoint] {result.stdout.strip()}")
    read = load_state_dict(tmp_path / "read.npz")
    assert sorted(read) == sorted(state)
    assert all(read[k].dtype == state[k].dtype and np.array_equal(read[k], state[k]) for k in state)
    _, got = convert_state_dict(arch, read)
    _, want = convert_state_dict(arch, state)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))


def test_another_stage_order_is_an_error():
    """A 4x4 checkpoint in raster order imported as the authors' optimized order."""
    arch = "cheng2020-attn-gmm-multistage-4x4"
    state = authors_state_dict(arch, pattern=get_schedule("mscm4x4").pattern)
    with pytest.raises(CheckpointMismatchError, match=r"curr_latent_mask\[1\]"):
        convert_state_dict(arch, state)


def test_wrong_arch_lists_the_mismatches():
    state = authors_state_dict("cheng2020-attn-gmm-multistage-2x2")
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict("cheng2020-attn-gmm-multistage-4x4", state)
    message = str(e.value)
    assert "missing: multistage_context.gcm.10.mask" in message and "(+" in message
    assert (
        "multistage_context.curr_latent_mask: (4, 1, 1, 2, 2) in the checkpoint, (16, 1, 1, 4, 4)" in message
    )
    state["g_s.1.conv1.weight"] = state["g_s.1.conv1.weight"][:, :, :1]
    with pytest.raises(CheckpointMismatchError, match=r"g_s\.1\.conv1\.weight: \(8, 8, 1, 3\)"):
        convert_state_dict("cheng2020-attn-gmm-multistage-2x2", state)
    with pytest.raises(CheckpointMismatchError, match=re.escape("missing key 'g_a.0.weight'")):
        convert_state_dict("mbt2018", state)
    with pytest.raises(ValueError, match="unknown architecture"):
        convert_state_dict("bmshj2018", state)


def test_constant_mismatch_is_an_error():
    arch = "cheng2020-attn-gmm-multistage-2x2"
    state = authors_state_dict(arch)
    state["g_a.0.gdn.beta_reparam.pedestal"][:] = 1e-3
    with pytest.raises(CheckpointMismatchError, match="pedestal"):
        convert_state_dict(arch, state)


def test_unwrap_nesting_prefixes_and_new_names():
    inner = {"module.g_a.0.weight": np.ones((2, 3)), "module.entropy_bottleneck.matrices.0": np.zeros(3)}
    state = unwrap_state_dict({"epoch": 3, "state_dict": {"state_dict": inner}})
    assert sorted(state) == ["entropy_bottleneck.matrices.0", "g_a.0.weight"]
    assert sorted(normalize_keys(state)) == ["entropy_bottleneck._matrix0", "g_a.0.weight"]
    with pytest.raises(ValueError, match="not a tensor"):
        unwrap_state_dict({"g_a.0.weight": "text"})


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(RuntimeError, match=re.escape('pip install -e ".[torch]"')):
        load_state_dict(path)
    assert main(["import-torch", str(path), "--arch", "mbt2018", "-o", str(tmp_path / "wd")]) == 2


def test_cli_import_then_estimate(tmp_path, capsys):
    arch = "cheng2020-attn-gmm-multistage-2x2"
    state = authors_state_dict(arch, m=4)
    np.savez(tmp_path / "ckpt.npz", **{f"module.{k}": v for k, v in state.items()})
    workdir = tmp_path / "imported"
    assert main(["import-torch", str(tmp_path / "ckpt.npz"), "--arch", arch, "-o", str(workdir)]) == 0
    assert "N=4, M=4, K=3, schedule mscm2x2" in capsys.readouterr().out
    config, params, step = load_workdir_params(workdir)
    _, want = convert_state_dict(arch, state)
    assert step == 0 and config.schedule == "mscm2x2"
    assert all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True)
    )
    image = tmp_path / "small.png"
    Image.fromarray((np.random.default_rng(0).uniform(size=(64, 64, 3)) * 255).astype(np.uint8)).save(image)
    assert main(["estimate", "--model", str(workdir), "--image", str(image)]) == 0
    out = capsys.readouterr().out
    assert "mscm2x2" in out and "step 0" in out
    assert main(["import-torch", str(tmp_path / "ckpt.npz"), "--arch", arch, "-o", str(workdir)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    # Straight to one exported file: it decodes what the imported workdir encodes.
    model_file = tmp_path / "imported.mscm-model"
    assert main(["import-torch", str(tmp_path / "ckpt.npz"), "--arch", arch, "-o", str(model_file)]) == 0
    assert main(["import-torch", str(tmp_path / "ckpt.npz"), "--arch", arch, "-o", str(model_file)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    photo = np.asarray(Image.open(image))
    encoded = Codec.load(workdir).compress(photo)
    np.testing.assert_array_equal(Codec.load(model_file).decompress(encoded.data).y_hat, encoded.y_hat)
