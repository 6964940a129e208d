"""Image quality metrics for evaluation: PSNR, SSIM and 5-scale MS-SSIM.

Convention (as CompressAI's `eval_model`): both images are compared as 8-bit
RGB. A reconstruction in [0, 1] is first clipped and rounded to integers
0..255 (`to_8bit`); PSNR pools the squared error over all pixels and all three
channels with peak 255; (MS-)SSIM is computed per channel with data range 255
and averaged over channels. `rgb_metrics` applies this convention.

Images are numpy arrays (H, W, C) or (H, W); evaluation runs once per image,
so numpy/scipy in float64 is fast enough and keeps the maths transparent.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Wang, Simoncelli, Bovik, "Multi-scale structural similarity for image quality
# assessment", Asilomar 2003, Sec. 3.2 (exponents fitted per scale).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
# 5 scales and an 11-tap valid window: the coarsest scale (1/16) must still
# hold one window, so the smaller side must exceed (11 - 1) * 2**4 = 160.
MS_SSIM_MIN_SIDE = (WINDOW_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1


def to_8bit(x: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as float64 integers 0..255: `round(clip(x, 0, 1) * 255)`."""
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0)


def _as_hwc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, *, max_value: float) -> float:
    """Peak signal-to-noise ratio in dB: `10 log10(max_value^2 / MSE)`.

    The MSE is the mean over all pixels and channels (RGB PSNR, not a mean of
    per-channel PSNRs). `max_value` is 255 for 8-bit values, 1 for [0, 1].
    Identical images give `inf`.
    """
    a, b = _as_hwc(a, b)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(max_value**2 / mse))


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """1-D window `g_k = exp(-k^2 / (2 sigma^2)) / sum`, k = -(size//2) .. size//2."""
    k = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 2-D Gaussian filter over axes 0, 1, keeping only windows fully inside ("valid")."""
    half = len(window) // 2
    for axis in (0, 1):
        x = ndimage.correlate1d(x, window, axis=axis, mode="constant")
    return x[half : x.shape[0] - half, half : x.shape[1] - half]


def _ssim_and_cs(a: np.ndarray, b: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel SSIM and contrast-structure term, each the mean of its map over valid windows.

    With Gaussian-weighted local means mu, variances sigma^2 and covariance
    sigma_ab (population moments, E[x^2] - mu^2), C1 = (K1 L)^2, C2 = (K2 L)^2:
      cs   = (2 sigma_ab + C2) / (sigma_a^2 + sigma_b^2 + C2)
      ssim = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) * cs
    (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004, Eq. 13).
    """
    window = gaussian_window()
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a**2
    var_b = _filter_valid(b * b, window) - mu_b**2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    cs_map = (2 * cov + c2) / (var_a + var_b + c2)
    ssim_map = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs_map
    return ssim_map.mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float) -> float:
    """Single-scale SSIM (11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03), mean over channels.

    Averaged over the positions where the window lies fully inside the image,
    as scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)` and pytorch_msssim's `ssim` do.
    """
    a, b = _as_hwc(a, b)
    if min(a.shape[:2]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE} pixels a side, got {a.shape[:2]}")
    return float(_ssim_and_cs(a, b, data_range)[0].mean())


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd side is first zero-padded by one on each end.

    The padding (with the zeros counted in the average) is pytorch_msssim's
    `avg_pool2d(kernel_size=2, padding=size % 2)`, which CompressAI's results use.
    """
    pads = [(s % 2, s % 2) for s in x.shape[:2]] + [(0, 0)]
    x = np.pad(x, pads)
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(a: np.ndarray, b: np.ndarray, *, data_range: float) -> float | None:
    """5-scale MS-SSIM (Wang et al. 2003), or None for images under 161 pixels a side.

      MS-SSIM = prod_{j<5} relu(cs_j)^{w_j} * relu(ssim_5)^{w_5}, per channel, then the channel mean,

    with weights `MS_SSIM_WEIGHTS`, scale j obtained by j 2x2 average poolings
    (`_downsample`), and cs/ssim as in `_ssim_and_cs`. Values equal
    pytorch_msssim's `ms_ssim` (tested). Below `MS_SSIM_MIN_SIDE` the coarsest
    scale holds no full window and the metric is undefined: None, not a value.
    """
    a, b = _as_hwc(a, b)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    weights = np.asarray(MS_SSIM_WEIGHTS)
    factors = []
    for level in range(len(weights)):
        s, cs = _ssim_and_cs(a, b, data_range)
        if level < len(weights) - 1:
            factors.append(np.maximum(cs, 0.0))
            a, b = _downsample(a), _downsample(b)
    factors.append(np.maximum(s, 0.0))
    per_channel = np.prod(np.stack(factors) ** weights[:, None], axis=0)
    return float(per_channel.mean())


def rgb_metrics(original: np.ndarray, reconstruction: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB) and MS-SSIM of a reconstruction against its original, both as 8-bit RGB.

    `original` is uint8 (H, W, 3); `reconstruction` is a float image in [0, 1]
    (clipped and rounded by `to_8bit`) or uint8. Returns `{"psnr-rgb": ...,
    "ms-ssim-rgb": ...}` with the key names of CompressAI's result files;
    MS-SSIM is None for images under 161 pixels a side.
    """
    if np.asarray(original).dtype != np.uint8:
        raise ValueError(f"the original must be an 8-bit image, got {np.asarray(original).dtype}")
    x = np.asarray(original, np.float64)
    r = np.asarray(reconstruction)
    y = r.astype(np.float64) if r.dtype == np.uint8 else to_8bit(r)
    return {"psnr-rgb": psnr(x, y, max_value=255.0), "ms-ssim-rgb": ms_ssim(x, y, data_range=255.0)}
