"""Regenerates the MS-SSIM / SSIM reference values pinned in tests/test_metrics.py.

Not part of the test suite (nothing imports it). Run it in a separate
environment with PyTorch and pytorch_msssim, the implementation CompressAI's
evaluation uses:

    python3 -m venv /tmp/msssim-venv
    /tmp/msssim-venv/bin/pip install torch==2.13.0 pytorch_msssim scikit-image
    /tmp/msssim-venv/bin/python tests/reference/msssim_reference.py

The inputs are sample photos bundled with scikit-image, cropped, with
distortions made of integer numpy operations only (box blur, quantization, a
fixed integer pattern), so that the test regenerates them bit-exactly without
any codec or random generator. `make_case` here and in the test must agree;
the sha256 of each pair is printed and pinned to catch drift.
"""

import hashlib
import importlib.metadata

import numpy as np
import pytorch_msssim
import skimage
import skimage.data
import torch

# name: (photo, top, left, height, width, distortion)
CASES = {
    "astronaut-256-blur": ("astronaut", 0, 128, 256, 256, "blur"),
    "coffee-200x300-quant": ("coffee", 50, 100, 200, 300, "quant"),
    "chelsea-161x171-pattern": ("chelsea", 20, 40, 161, 171, "pattern"),
    "rocket-231x257-mix": ("rocket", 100, 200, 231, 257, "mix"),
}


def box_blur(x: np.ndarray, r: int = 2) -> np.ndarray:
    """Mean over a (2r+1)^2 window with edge replication, rounded down, in integers."""
    p = np.pad(x.astype(np.int64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    acc = sum(p[i : i + h, j : j + w] for i in range(2 * r + 1) for j in range(2 * r + 1))
    return (acc // (2 * r + 1) ** 2).astype(np.uint8)


def quantize(x: np.ndarray, step: int = 24) -> np.ndarray:
    return np.minimum((x.astype(np.int64) // step) * step + step // 2, 255).astype(np.uint8)


def pattern(x: np.ndarray, amplitude: int = 12) -> np.ndarray:
    """Adds a fixed pseudo-noise in [-amplitude, amplitude] from an integer hash of (row, col, channel)."""
    i, j, c = np.meshgrid(*(np.arange(s) for s in x.shape), indexing="ij")
    noise = (i * 7919 + j * 104729 + c * 1299709 + i * j * 31) % (2 * amplitude + 1) - amplitude
    return np.clip(x.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def mix(x: np.ndarray) -> np.ndarray:
    return pattern(box_blur(x), 6)


DISTORTIONS = {"blur": box_blur, "quant": quantize, "pattern": pattern, "mix": mix}


def make_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    photo, top, left, h, w, kind = CASES[name]
    x = np.ascontiguousarray(getattr(skimage.data, photo)()[top : top + h, left : left + w, :3])
    return x, DISTORTIONS[kind](x)


def digest(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]


def to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]


def float64_window(channels: int, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """pytorch_msssim's Gaussian window, computed in float64 (its default is built in float32)."""
    k = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return (g / g.sum())[None, None].repeat(channels, 1, 1, 1)


def main():
    versions = (
        f"pytorch_msssim {importlib.metadata.version('pytorch_msssim')}, torch {torch.__version__}, "
        f"scikit-image {skimage.__version__}, numpy {np.__version__}"
    )
    print(f"# {versions}; data_range 255, float64 inputs")
    print("# name: (sha256 of the pair, ms_ssim, ssim) with the default (float32) window,")
    print("#       then (ms_ssim, ssim) with a float64 window")
    for name in CASES:
        x, y = make_case(name)
        a, b = to_torch(x), to_torch(y)
        values = []
        for win in (None, float64_window(3)):
            values.append(pytorch_msssim.ms_ssim(a, b, data_range=255, win=win).item())
            values.append(pytorch_msssim.ssim(a, b, data_range=255, win=win).item())
        print(f'    "{name}": (\n        "{digest(x, y)}",')
        for v in values:
            print(f"        {v!r},")
        print("    ),")


if __name__ == "__main__":
    main()
