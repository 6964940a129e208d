"""CompressAI reference outputs for the import parity tests (runs in the torch venv).

Builds a CompressAI 1.2.8 model (`mbt2018`, `mbt2018-mean` or `cheng2020-attn`)
at a small size with seeded random weights made sane for a test (GDN and the
entropy bottleneck perturbed away from their initial values, latents scaled to
a few units, scales lifted above their bound), then on one fixed image:

- codes it with CompressAI's own `compress` / `decompress` (the serial
  y - mean rounding of its coder) and captures the y_hat that `decompress`
  feeds to g_s;
- evaluates, deterministically and with CompressAI's modules only, y, z,
  z_hat (rounded around its quantiles' medians), the hyper-synthesis output,
  the Gaussian parameters of y_hat and their likelihoods, and x_hat = g_s(y_hat).

Writes OUT/state_dict.pth.tar (a training-style checkpoint: nested under
"state_dict", keys prefixed "module."), OUT/state_dict.npz (that file as read
by mscm_jax/tools/torch_checkpoint.py, loaded here by path since JAX is absent) and
OUT/reference.npz (arrays NHWC).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import time

import numpy as np
import torch
from compressai.layers import GDN
from compressai.models import Cheng2020Attention, JointAutoregressiveHierarchicalPriors, MeanScaleHyperprior

REPO = pathlib.Path(__file__).resolve().parents[2]


def build(arch: str, n: int, m: int) -> torch.nn.Module:
    if arch == "mbt2018":
        return JointAutoregressiveHierarchicalPriors(N=n, M=m)
    if arch == "mbt2018-mean":
        return MeanScaleHyperprior(N=n, M=m)
    if arch == "cheng2020-attn":
        return Cheng2020Attention(N=n)
    raise SystemExit(f"unknown arch {arch}")


def test_image(h: int, w: int, seed: int) -> torch.Tensor:
    """Smooth colour gradients with texture, in [0, 1], (1, 3, h, w)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    channels = [0.5 + 0.4 * np.sin(6 * xx + 3 * c) * np.cos(4 * yy - c) for c in range(3)]
    image = np.stack(channels) + 0.05 * rng.standard_normal((3, h, w))
    return torch.from_numpy(np.clip(image, 0, 1).astype(np.float32))[None]


def last_conv(seq: torch.nn.Sequential) -> torch.nn.Module:
    layer = seq[-1]
    return layer[0] if isinstance(layer, torch.nn.Sequential) else layer


@torch.no_grad()
def make_sane(model, x: torch.Tensor, gen: torch.Generator) -> None:
    """Random-but-sane weights: perturbed GDN / bottleneck, y and z of a few units, scales >= ~1."""
    pedestal = (2.0**-18) ** 2
    for module in model.modules():
        if isinstance(module, GDN):
            c = module.beta.shape[0]
            beta = 0.5 + torch.rand(c, generator=gen)
            gamma = 0.1 * torch.eye(c) + 0.02 * torch.rand(c, c, generator=gen)
            module.beta.copy_(torch.sqrt(beta + pedestal))
            module.gamma.copy_(torch.sqrt(gamma + pedestal))
    eb = model.entropy_bottleneck
    for i in range(len(eb.filters) + 1):
        eb.matrices[i].add_(0.3 * torch.randn(eb.matrices[i].shape, generator=gen))
        eb.biases[i].add_(0.5 * torch.randn(eb.biases[i].shape, generator=gen))
        if i < len(eb.filters):
            eb.factors[i].copy_(0.5 * torch.randn(eb.factors[i].shape, generator=gen))
    medians = 0.8 * torch.rand(eb.quantiles.shape[0], generator=gen) - 0.4
    eb.quantiles[:, 0, 0] = medians - 12
    eb.quantiles[:, 0, 1] = medians
    eb.quantiles[:, 0, 2] = medians + 12
    for seq, target, sample in ((model.g_a, 4.0, lambda: x), (model.h_a, 3.0, lambda: model.g_a(x))):
        # The last convolution (before cheng2020's final attention block, which is
        # nearly but not exactly linear in its input: a few rounds).
        conv = [layer for layer in seq if isinstance(layer, torch.nn.Conv2d)][-1]
        for _ in range(3):
            std = float(seq(sample()).std())
            conv.weight.mul_(target / std)
            conv.bias.mul_(target / std)
    # The scales are the first chunk of the last layer's output: lift them.
    head = last_conv(model.entropy_parameters if hasattr(model, "entropy_parameters") else model.h_s)
    m = model.M
    head.bias[:m].add_(1.5)


class Capture(torch.nn.Module):
    """Records the input of the wrapped module."""

    def __init__(self, inner: torch.nn.Module, store: dict):
        super().__init__()
        self.inner, self.store = inner, store

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        self.store["y_hat"] = y_hat.clone()
        return self.inner(y_hat)


def load_reader():
    """mscm_jax/tools/torch_checkpoint.py by path (the package __init__ needs JAX)."""
    spec = importlib.util.spec_from_file_location(
        "torch_checkpoint", REPO / "mscm_jax" / "tools" / "torch_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", required=True)
    parser.add_argument("--N", type=int, default=16)
    parser.add_argument("--M", type=int, default=24)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)

    model = build(args.arch, args.N, args.M)
    x = test_image(args.height, args.width, args.seed)
    make_sane(model, x, gen)
    model.eval()
    model.update(force=True)

    # CompressAI's coder: y_hat as its decoder feeds it to g_s.
    captured = {}
    g_s = model.g_s
    model.g_s = Capture(g_s, captured)
    started = time.perf_counter()
    coded = model.compress(x)
    decoded = model.decompress(coded["strings"], coded["shape"])
    coding_seconds = time.perf_counter() - started
    model.g_s = g_s
    coded_bits = 8 * sum(len(s) for strings in coded["strings"] for s in strings)

    y = model.g_a(x)
    z = model.h_a(y)
    z_hat, z_likelihoods = model.entropy_bottleneck(z)
    hyper = model.h_s(z_hat)
    y_hat = captured["y_hat"]
    if args.arch == "mbt2018-mean":
        gaussian = hyper
    else:
        ctx = model.context_prediction(y_hat)
        gaussian = model.entropy_parameters(torch.cat((hyper, ctx), dim=1))
    scales, means = gaussian.chunk(2, 1)
    if args.arch == "mbt2018-mean":  # its forward() is deterministic in eval mode: cross-check
        forward = model(x)
        assert torch.equal(forward["x_hat"], model.g_s(y_hat)), (
            "mbt2018-mean forward disagrees with its coder"
        )
    gc = model.gaussian_conditional
    y_likelihoods = gc.likelihood_lower_bound(gc._likelihood(y_hat, scales, means))
    x_hat = model.g_s(y_hat)

    bits = lambda p: float(-torch.log2(p).sum())  # noqa: E731
    np.savez(
        out / "reference.npz",
        x=nhwc(x), y=nhwc(y), z=nhwc(z), z_hat=nhwc(z_hat), hyper=nhwc(hyper), y_hat=nhwc(y_hat),
        means=nhwc(means), scales=nhwc(scales), x_hat=nhwc(x_hat), x_hat_decoded=nhwc(decoded["x_hat"]),
        y_likelihoods=nhwc(y_likelihoods), z_likelihoods=nhwc(z_likelihoods),
        y_bits=bits(y_likelihoods), z_bits=bits(z_likelihoods), coded_bits=coded_bits,
        coding_seconds=coding_seconds,
    )  # fmt: skip
    state = model.state_dict()
    torch.save(
        {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, out / "state_dict.pth.tar"
    )
    read = load_reader().load_state_dict(out / "state_dict.pth.tar")
    assert sorted(read) == sorted(state), "reader changed the keys"
    assert all(np.array_equal(read[k], state[k].numpy()) for k in state), "reader changed values"
    np.savez(out / "state_dict.npz", **read)
    y_bpp = bits(y_likelihoods) / (args.height * args.width)
    print(
        f"{args.arch}: N={args.N} M={model.M} y {tuple(y.shape)} std {float(y.std()):.2f}, "
        f"nonzero y_hat {float((y_hat.round() != 0).float().mean()):.2f}, y bpp {y_bpp:.3f}, "
        f"estimated bits {bits(y_likelihoods) + bits(z_likelihoods):.1f}, coded bits {coded_bits}, "
        f"coding {coding_seconds:.2f} s, "
        f"PSNR(decoded) {-10 * math.log10(float(((decoded['x_hat'] - x) ** 2).mean())):.2f} dB"
    )


if __name__ == "__main__":
    main()
