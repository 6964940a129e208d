"""Cost of the authors' MSCM decoding computation on this machine (runs in the PyTorch venv).

Rebuilds, from the facts in docs/paper.md (not from their code), the networks the
authors' decoder runs, at their default sizes: CompressAI's `Cheng2020Attention`
(N = M = 192) hyper-synthesis and synthesis, and per stage a 5x5 masked context
convolution (2M x M x 5 x 5, no bias) over the *whole* latent, the entropy
parameter network (4M -> M*10//3 -> M*8//3 -> 3KM) over the whole latent, the
split into scales / means / weights with a softmax over K, and the masked
update of y_hat. Random weights: the cost does not depend on their values.

It times that computation, warm, for each pattern given, and prints one JSON
object. The coder is not included (their coder builds a table per element in
Python loops), so the entropy-decoding figures are a lower bound of theirs.

    python experiments/torch_authors_decode.py --height 512 --width 768 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from compressai.models import Cheng2020Attention
from torch import nn

PATTERNS = {  # docs/paper.md, "The method (Sec. 2)": the patterns of the authors' code
    "mscm2x2": [[0, 1], [2, 3]],
    "mscm4x4-paper": [[0, 2, 5, 4], [1, 7, 11, 8], [6, 12, 13, 10], [3, 14, 15, 9]],
}


def context_window_mask(pattern: np.ndarray, stage: int, size: int = 5) -> np.ndarray:
    """(size, size) mask of the earlier-stage neighbours of the position decoded at `stage`."""
    n = pattern.shape[0]
    (i, j), *_ = zip(*np.nonzero(pattern == stage), strict=True)
    offsets = np.arange(size) - size // 2
    window = pattern[(i + offsets[:, None]) % n, (j + offsets[None, :]) % n]
    return (window < stage).astype(np.float32)


class AuthorsStageLoop(nn.Module):
    """Every stage: masked context conv and entropy parameters over the whole latent, then mask."""

    def __init__(self, pattern: list[list[int]], m: int, k: int, latent_hw: tuple[int, int]):
        super().__init__()
        p = np.asarray(pattern)
        self.num_stages, self.m, self.k = p.size, m, k
        reps = (-(-latent_hw[0] // p.shape[0]), -(-latent_hw[1] // p.shape[1]))
        tiled = np.tile(p, reps)[: latent_hw[0], : latent_hw[1]]
        self.register_buffer("curr", torch.from_numpy(np.stack([tiled == s for s in range(p.size)])).float())
        masks = [np.broadcast_to(context_window_mask(p, s), (2 * m, m, 5, 5)) for s in range(p.size)]
        self.register_buffer("conv_masks", torch.from_numpy(np.stack(masks).copy()))
        self.context_counts = [int(context_window_mask(p, s).sum()) for s in range(p.size)]
        self.convs = nn.ModuleList(nn.Conv2d(m, 2 * m, 5, padding=2, bias=False) for _ in range(p.size))
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(4 * m, m * 10 // 3, 1), nn.LeakyReLU(),
            nn.Conv2d(m * 10 // 3, m * 8 // 3, 1), nn.LeakyReLU(),
            nn.Conv2d(m * 8 // 3, 3 * k * m, 1),
        )  # fmt: skip

    def forward(self, hyper: torch.Tensor) -> torch.Tensor:
        b, _, h, w = hyper.shape
        y_hat = hyper.new_zeros(b, self.m, h, w)
        for s in range(self.num_stages):
            if s == 0:
                ctx = hyper.new_zeros(b, 2 * self.m, h, w)
            else:
                weight = self.convs[s].weight * self.conv_masks[s]
                ctx = nn.functional.conv2d(y_hat, weight, padding=2)
            _scales, means, weights = self.entropy_parameters(torch.cat([hyper, ctx], 1)).chunk(3, 1)
            weights = weights.reshape(b, self.k, self.m, h, w).softmax(1)
            # Stands in for the coder's output at this stage (values do not change the cost).
            decoded = torch.round((weights * means.reshape(b, self.k, self.m, h, w)).sum(1))
            y_hat = y_hat + self.curr[s] * decoded
        return y_hat


def median_time(fn, repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--channels", type=int, default=192, help="N = M")
    p.add_argument("--mixtures", type=int, default=3, help="K")
    p.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    m = args.channels
    latent = (args.height // 16, args.width // 16)
    model = Cheng2020Attention(N=m).eval()
    z_hat = torch.randn(1, m, latent[0] // 4, latent[1] // 4)
    y_hat = torch.randn(1, m, *latent)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "height": args.height,
        "width": args.width,
        "channels": m,
        "mixtures": args.mixtures,
        "repeats": args.repeats,
        "matmul_gflops": 2 * 2048**3 / median_time(lambda: a @ b, args.repeats) / 1e9,
        "hyper_synthesis_s": median_time(lambda: model.h_s(z_hat), args.repeats),
        "synthesis_s": median_time(lambda: model.g_s(y_hat), args.repeats),
        "patterns": {},
    }
    hyper = model.h_s(z_hat)
    for name in args.patterns:
        loop = AuthorsStageLoop(PATTERNS[name], m, args.mixtures, latent).eval()
        stages_s = median_time(lambda loop=loop: loop(hyper), args.repeats)
        result["patterns"][name] = {
            "stages": loop.num_stages,
            "context_counts": loop.context_counts,
            "stages_s": stages_s,
            "entropy_decoding_lower_bound_s": result["hyper_synthesis_s"] + stages_s,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
