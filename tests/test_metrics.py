"""Metrics against independent implementations: scikit-image (PSNR, SSIM) and pytorch_msssim (MS-SSIM)."""

import hashlib

import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mscm_jax.tools.metrics import MS_SSIM_MIN_SIDE, ms_ssim, psnr, rgb_metrics, ssim, to_8bit

# Reference values printed by tests/reference/msssim_reference.py, run with
# pytorch_msssim 1.0.0, torch 2.13.0+cpu, scikit-image 0.26.0, numpy 2.4.6
# (float64 inputs, data_range 255). name: (sha256 of the pair, ms_ssim, ssim)
# with pytorch_msssim's default window, which it builds in float32 (its sum is
# 1 - 3e-8, enough to move SSIM by ~3e-6 at 8-bit scale), then ms_ssim, ssim
# with the same window computed in float64.
PYTORCH_MSSSIM = {
    "astronaut-256-blur": (
        "e41a94e012523fbf",
        0.9715250398420819,
        0.8402045542247657,
        0.9715247021656622,
        0.8402019792100056,
    ),
    "coffee-200x300-quant": (
        "5661afbab2fc7836",
        0.9634517975266199,
        0.8484544837079059,
        0.963451035417298,
        0.8484520532690912,
    ),
    "chelsea-161x171-pattern": (
        "3145003c805b72d3",
        0.9802149033272584,
        0.8408260706648409,
        0.9802147502905783,
        0.8408249054291396,
    ),
    "rocket-231x257-mix": (
        "ad68481007551a1f",
        0.9566228510298379,
        0.7511562454765707,
        0.9566224558584198,
        0.7511542209825713,
    ),
}

# The same inputs as tests/reference/msssim_reference.py (integer operations
# only, so they regenerate bit-exactly; the pinned digests catch any drift).
CASES = {
    "astronaut-256-blur": ("astronaut", 0, 128, 256, 256, "blur"),
    "coffee-200x300-quant": ("coffee", 50, 100, 200, 300, "quant"),
    "chelsea-161x171-pattern": ("chelsea", 20, 40, 161, 171, "pattern"),
    "rocket-231x257-mix": ("rocket", 100, 200, 231, 257, "mix"),
}


def box_blur(x, r=2):
    p = np.pad(x.astype(np.int64), ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    acc = sum(p[i : i + h, j : j + w] for i in range(2 * r + 1) for j in range(2 * r + 1))
    return (acc // (2 * r + 1) ** 2).astype(np.uint8)


def quantize(x, step=24):
    return np.minimum((x.astype(np.int64) // step) * step + step // 2, 255).astype(np.uint8)


def pattern(x, amplitude=12):
    i, j, c = np.meshgrid(*(np.arange(s) for s in x.shape), indexing="ij")
    noise = (i * 7919 + j * 104729 + c * 1299709 + i * j * 31) % (2 * amplitude + 1) - amplitude
    return np.clip(x.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def mix(x):
    return pattern(box_blur(x), 6)


DISTORTIONS = {"blur": box_blur, "quant": quantize, "pattern": pattern, "mix": mix}


def make_case(name):
    photo, top, left, h, w, kind = CASES[name]
    x = np.ascontiguousarray(getattr(skimage.data, photo)()[top : top + h, left : left + w, :3])
    return x, DISTORTIONS[kind](x)


@pytest.fixture(scope="module", params=list(PYTORCH_MSSSIM))
def case(request):
    x, y = make_case(request.param)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    assert digest == PYTORCH_MSSSIM[request.param][0], "inputs differ from the reference script's"
    return request.param, x, y


def test_ms_ssim_matches_pytorch_msssim(case):
    name, x, y = case
    _, default_window, _, exact, _ = PYTORCH_MSSSIM[name]
    value = ms_ssim(x, y, data_range=255)
    assert value == pytest.approx(exact, abs=1e-12)
    assert value == pytest.approx(default_window, abs=2e-6)
    # Scale invariance: [0, 1] images with data range 1 give the same value.
    assert ms_ssim(x / 255, y / 255, data_range=1) == pytest.approx(exact, abs=1e-12)


def test_ssim_matches_pytorch_msssim_and_scikit_image(case):
    name, x, y = case
    _, _, default_window, _, exact = PYTORCH_MSSSIM[name]
    value = ssim(x, y, data_range=255)
    assert value == pytest.approx(exact, abs=1e-12)
    assert value == pytest.approx(default_window, abs=5e-6)
    reference = structural_similarity(
        x.astype(np.float64), y.astype(np.float64), data_range=255, channel_axis=-1,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )  # fmt: skip
    assert value == pytest.approx(reference, abs=1e-10)


def test_psnr_matches_scikit_image(case):
    _, x, y = case
    reference = peak_signal_noise_ratio(x, y, data_range=255)
    assert psnr(x, y, max_value=255) == pytest.approx(reference, abs=1e-10)
    assert psnr(x / 255, y / 255, max_value=1) == pytest.approx(reference, abs=1e-10)


def test_psnr_is_rgb_pooled_and_infinite_for_identical_images():
    x = np.zeros((8, 8, 3))
    y = x.copy()
    y[..., 0] = 1.0  # error only in the red channel: MSE = 1/3 over all channels
    assert psnr(x, y, max_value=1) == pytest.approx(10 * np.log10(3))
    assert psnr(x, x, max_value=1) == float("inf")


def test_ms_ssim_is_undefined_below_161_pixels_a_side():
    assert MS_SSIM_MIN_SIDE == 161
    x, y = make_case("chelsea-161x171-pattern")  # 161 x 171: the smallest defined size
    assert ms_ssim(x, y, data_range=255) is not None
    assert ms_ssim(x[:160], y[:160], data_range=255) is None
    assert ms_ssim(x[:, :160], y[:, :160], data_range=255) is None
    assert rgb_metrics(x[:100, :100], y[:100, :100])["ms-ssim-rgb"] is None


def test_rgb_metrics_round_a_float_reconstruction_to_8_bit():
    x, y = make_case("astronaut-256-blur")
    soft = y / 255 + 0.4 / 255  # rounds back to y
    metrics = rgb_metrics(x, soft)
    assert metrics["psnr-rgb"] == pytest.approx(peak_signal_noise_ratio(x, y, data_range=255))
    assert metrics["ms-ssim-rgb"] == pytest.approx(PYTORCH_MSSSIM["astronaut-256-blur"][3], abs=1e-12)
    np.testing.assert_array_equal(to_8bit(np.array([-0.1, 0.5, 1.2])), [0, 128, 255])
    with pytest.raises(ValueError, match="8-bit"):
        rgb_metrics(x / 255, soft)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), max_value=1)
