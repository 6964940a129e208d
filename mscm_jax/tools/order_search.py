"""Decoding-order optimization: which in-patch stage pattern needs the fewest bits?

The rate of a schedule depends on how well each element is predicted from the
neighbours that are already decoded when its stage runs. This module scores a
pattern with a cheap stand-in for the context model and searches for a good one.

**Score.** For the elements at in-patch position p, a linear least-squares
predictor (with intercept, one per latent channel c) of the element from its
*visible* 5x5 neighbours V_p (the taps `Schedule.context_kernel_mask()` marks:
a neighbour is visible iff its stage is smaller) leaves the residual variance

    var_c(p) = S_c[0, 0] - S_c[0, V] S_c[V, V]^-1 S_c[V, 0]

where S_c is the covariance of the 25 window taps of channel c over all
elements at p (a Schur complement; with exact covariances this is the exact
conditional variance of a Gaussian field). The rate estimate is the entropy of
a Gaussian with that variance, `0.5 log2(2 pi e var)` bits ("gaussian"), or of
that Gaussian rounded to integers ("discrete", for rounded latents: never
negative). The score of a pattern is the mean over positions and channels, in
bits per latent element.

**One fit** is one such solve, for all channels at once (a batch of C small
linear systems), for one (position, visible set); fits are cached, so the
counts below are distinct fits.

**Search.** (1) Greedy, position by position: at step t, every remaining
position p is tried as the t-th decoded one; its cost is the score of the
pattern in which p is decoded at stage t and all still-remaining positions
right after it (so a candidate is judged by its own rate *and* by how much it
helps the positions still to come). The cheapest is kept (ties: raster order).
(2) With S < n*n stages, the greedy order is cut into S consecutive groups by
dynamic programming over the cut points (the optimal grouping of that order:
the members of a group see exactly the positions of earlier groups).
(3) Local search: exchanging the stages of two positions, accepting strict
improvements, until none helps. At most n^4 (greedy) + n^4 (grouping) +
passes * n^2 (n^2 - 1) / 2 * n^2 evaluations; most hit the cache.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import special

from mscm_jax.model.schedules import KERNEL_SIZE, PAPER_4X4_ORDER, get_schedule

RATE_MODELS = ("discrete", "gaussian")


@dataclasses.dataclass
class TapMoments:
    """Sufficient statistics of the 5x5 window taps, per in-patch position and channel.

    `count[p]` elements at position p (raster index i * n + j), `sum[p, c]` (k*k,)
    and `outer[p, c]` (k*k, k*k) sums of the taps and of their outer products.
    """

    n: int
    count: np.ndarray
    sum: np.ndarray
    outer: np.ndarray

    def covariance(self) -> np.ndarray:
        """(n*n, C, k*k, k*k) tap covariance `E[x x^T] - E[x] E[x]^T` per position and channel."""
        if np.any(self.count == 0):
            raise ValueError("some in-patch positions have no samples; use larger latents")
        mean = self.sum / self.count[:, None, None]
        return self.outer / self.count[:, None, None, None] - mean[..., :, None] * mean[..., None, :]

    def __add__(self, other: TapMoments) -> TapMoments:
        if self.n != other.n or self.sum.shape != other.sum.shape:
            raise ValueError("moments of different patch sizes or channel counts")
        return TapMoments(self.n, self.count + other.count, self.sum + other.sum, self.outer + other.outer)


def tap_moments(latents: np.ndarray, n: int, kernel_size: int = KERNEL_SIZE) -> TapMoments:
    """Moments of the window taps of every element whose whole window lies inside the latent.

    `latents` is (B, H, W, C) (or (H, W, C)); the patch grid starts at (0, 0),
    as the stage plans tile it. Border elements are left out so that no tap
    reads padding.
    """
    y = np.asarray(latents, np.float64)
    y = y[None] if y.ndim == 3 else y
    if y.ndim != 4:
        raise ValueError(f"expected latents (B, H, W, C), got shape {y.shape}")
    _, h, w, c = y.shape
    half = kernel_size // 2
    if h < kernel_size + n - 1 or w < kernel_size + n - 1:
        raise ValueError(f"latent {h}x{w} too small for a {n}x{n} patch and a {kernel_size}-tap window")
    offsets = list(itertools.product(range(-half, half + 1), repeat=2))
    count = np.zeros(n * n)
    sums = np.zeros((n * n, c, len(offsets)))
    outer = np.zeros((n * n, c, len(offsets), len(offsets)))
    for i, j in itertools.product(range(n), repeat=2):
        rows = np.arange(half + (i - half) % n, h - half, n)
        cols = np.arange(half + (j - half) % n, w - half, n)
        taps = np.stack([y[:, rows[:, None] + a, cols[None, :] + b, :] for a, b in offsets], axis=-1)
        taps = taps.reshape(-1, c, len(offsets))
        p = i * n + j
        count[p] = taps.shape[0]
        sums[p] = taps.sum(axis=0)
        outer[p] = np.einsum("nck,ncl->ckl", taps, taps)
    return TapMoments(n, count, sums, outer)


def stationary_covariance(
    cov_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int, kernel_size: int = KERNEL_SIZE
) -> np.ndarray:
    """Exact (n*n, 1, k*k, k*k) tap covariance of a stationary field with covariance `cov_fn(dr, dc)`."""
    half = kernel_size // 2
    offsets = np.array(list(itertools.product(range(-half, half + 1), repeat=2)))
    d = offsets[:, None, :] - offsets[None, :, :]
    cov = np.asarray(cov_fn(d[..., 0], d[..., 1]), np.float64)
    return np.broadcast_to(cov, (n * n, 1, *cov.shape)).copy()


def conditional_variance(cov: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(C,) residual variance of the centre tap given the `visible` taps (flat bool mask).

    `cov` is (C, k*k, k*k). A tiny ridge keeps constant (e.g. all-zero) channels solvable.
    """
    centre = cov.shape[-1] // 2
    v = np.flatnonzero(visible)
    var0 = cov[:, centre, centre]
    if v.size == 0:
        return np.maximum(var0, 0.0)
    a = cov[:, v[:, None], v[None, :]]
    ridge = 1e-10 * (np.trace(a, axis1=1, axis2=2) / v.size + 1e-30)
    a = a + ridge[:, None, None] * np.eye(v.size)
    b = cov[:, v, centre]
    weights = np.linalg.solve(a, b[..., None])[..., 0]
    return np.maximum(var0 - np.sum(b * weights, axis=-1), 0.0)


def gaussian_bits(var: np.ndarray, rate_model: str = "discrete") -> np.ndarray:
    """Bits per element of a Gaussian with variance `var`.

    "gaussian": differential entropy `0.5 log2(2 pi e var)`.
    "discrete": entropy of N(0, var) rounded to integers,
    `-sum_k P_k log2 P_k` with `P_k = Phi((k + 1/2) / sigma) - Phi((k - 1/2) / sigma)`;
    from sigma = 2 on the two differ by < 1e-6 bits, so the closed form is used there.
    """
    var = np.asarray(var, np.float64)
    if rate_model == "gaussian":
        return 0.5 * np.log2(2 * np.pi * np.e * np.maximum(var, 1e-300))
    if rate_model != "discrete":
        raise ValueError(f"unknown rate model {rate_model!r}; use one of {', '.join(RATE_MODELS)}")
    sigma = np.sqrt(var)
    small = sigma < 2.0
    bits = 0.5 * np.log2(2 * np.pi * np.e * np.maximum(var, 1e-300))
    if np.any(small):
        s = np.maximum(sigma[small], 1e-12)[:, None]
        k = np.arange(-24, 25)[None, :]
        p = special.ndtr((k + 0.5) / s) - special.ndtr((k - 0.5) / s)
        bits[small] = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return bits


class OrderScorer:
    """Estimated bits of stage patterns from tap covariances; counts and caches its fits.

    `covariance` is (n*n, C, k*k, k*k), from `TapMoments.covariance()` (fitted
    on latents) or `stationary_covariance` (exact).
    """

    def __init__(self, covariance: np.ndarray, n: int, rate_model: str = "discrete"):
        if covariance.shape[0] != n * n:
            raise ValueError(f"covariance has {covariance.shape[0]} positions, a {n}x{n} patch needs {n * n}")
        gaussian_bits(np.ones(1), rate_model)  # validates the name
        self.covariance = covariance
        self.n = n
        self.rate_model = rate_model
        self.channels = covariance.shape[1]
        self.kernel_size = math.isqrt(covariance.shape[-1])
        self._cache: dict[tuple[int, bytes], float] = {}
        self.evaluations = 0

    @property
    def fits(self) -> int:
        """Distinct (position, visible set) least-squares fits so far (each over all channels)."""
        return len(self._cache)

    def position_bits(self, p: int, visible: np.ndarray) -> float:
        """Bits of position p (summed over channels, per element) given the flat visible-tap mask."""
        key = (p, np.packbits(visible).tobytes())
        if key not in self._cache:
            var = conditional_variance(self.covariance[p], visible)
            self._cache[key] = float(gaussian_bits(var, self.rate_model).sum())
        return self._cache[key]

    def pattern_bits(self, pattern: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """(n, n) bits per element at each in-patch position (summed over channels)."""
        schedule = get_schedule(np.asarray(pattern).tolist())
        if schedule.patch_size != self.n:
            raise ValueError(f"pattern is {schedule.patch_size} wide, the scorer's patches {self.n}")
        masks = dataclasses.replace(schedule, kernel_size=self.kernel_size).context_kernel_mask()
        self.evaluations += 1
        n = self.n
        bits = [self.position_bits(i * n + j, masks[i, j].ravel()) for i in range(n) for j in range(n)]
        return np.array(bits).reshape(n, n)

    def score(self, pattern: Sequence[Sequence[int]] | np.ndarray) -> float:
        """Mean estimated bits per latent element (over positions and channels)."""
        return float(self.pattern_bits(pattern).mean() / self.channels)


def _pattern_from_groups(groups: Sequence[Sequence[int]], n: int) -> np.ndarray:
    pattern = np.zeros(n * n, np.int32)
    for stage, members in enumerate(groups):
        pattern[list(members)] = stage
    return pattern.reshape(n, n)


def greedy_order(scorer: OrderScorer) -> list[int]:
    """Positions (raster indices) in greedy decoding order; see the module docstring, step (1)."""
    n2 = scorer.n**2
    order: list[int] = []
    while len(order) < n2:
        rest = [p for p in range(n2) if p not in order]
        costs = []
        for p in rest:
            later = [q for q in rest if q != p]
            groups = [[q] for q in order] + [[p]] + ([later] if later else [])
            costs.append(scorer.score(_pattern_from_groups(groups, scorer.n)))
        order.append(rest[int(np.argmin(costs))])
    return order


def group_order(scorer: OrderScorer, order: Sequence[int], stages: int) -> np.ndarray:
    """The optimal cut of `order` into `stages` consecutive groups (step (2)), as a pattern."""
    n, n2 = scorer.n, scorer.n**2
    if not 1 <= stages <= n2:
        raise ValueError(f"a {n}x{n} patch takes 1..{n2} stages, got {stages}")
    # bits[k, m]: position order[m] decoded after exactly the first k positions of the order.
    bits = np.zeros((n2 + 1, n2))
    for k in range(n2):
        groups = [order[:k], order[k:]] if k else [order]
        per_position = scorer.pattern_bits(_pattern_from_groups(groups, n)).ravel()
        bits[k, k:] = per_position[list(order[k:])]

    def group_cost(start: int, stop: int) -> float:
        return float(bits[start, start:stop].sum())

    best = np.full((stages + 1, n2 + 1), np.inf)
    cut = np.zeros((stages + 1, n2 + 1), int)
    best[0, 0] = 0.0
    for g in range(1, stages + 1):
        for stop in range(g, n2 + 1):
            for start in range(g - 1, stop):
                cost = best[g - 1, start] + group_cost(start, stop)
                if cost < best[g, stop]:
                    best[g, stop], cut[g, stop] = cost, start
    bounds = [n2]
    for g in range(stages, 0, -1):
        bounds.append(cut[g, bounds[-1]])
    bounds = bounds[::-1]
    return _pattern_from_groups([order[a:b] for a, b in itertools.pairwise(bounds)], n)


def refine(scorer: OrderScorer, pattern: np.ndarray, max_passes: int = 20) -> np.ndarray:
    """Local search (step (3)): swap the stages of two positions while that lowers the score."""
    pattern = np.array(pattern, np.int32)
    flat = pattern.reshape(-1)
    current = scorer.score(pattern)
    for _ in range(max_passes):
        improved = False
        for a, b in itertools.combinations(range(flat.size), 2):
            if flat[a] == flat[b]:
                continue
            flat[a], flat[b] = flat[b], flat[a]
            candidate = scorer.score(pattern)
            if candidate < current - 1e-12:
                current, improved = candidate, True
            else:
                flat[a], flat[b] = flat[b], flat[a]
        if not improved:
            break
    return pattern


@dataclasses.dataclass(frozen=True)
class SearchResult:
    pattern: np.ndarray
    bits: float  # mean estimated bits per latent element
    fits: int  # distinct least-squares fits (each over all channels)
    evaluations: int  # pattern scorings, most served from the fit cache
    seconds: float

    def pattern_json(self) -> str:
        """The pattern as JSON, ready for a config's `schedule` field or `get_schedule`."""
        return json.dumps(self.pattern.tolist())


def search_order(scorer: OrderScorer, stages: int | None = None, local_search: bool = True) -> SearchResult:
    """Greedy order, optimal grouping into `stages` (default n*n), then local search."""
    start = time.perf_counter()
    fits0, evals0 = scorer.fits, scorer.evaluations
    stages = scorer.n**2 if stages is None else stages
    pattern = group_order(scorer, greedy_order(scorer), stages)
    if local_search:
        pattern = refine(scorer, pattern)
    get_schedule(pattern.tolist())  # always a valid pattern
    return SearchResult(
        pattern=pattern,
        bits=scorer.score(pattern),
        fits=scorer.fits - fits0,
        evaluations=scorer.evaluations - evals0,
        seconds=time.perf_counter() - start,
    )


def raster_pattern(n: int, stages: int | None = None) -> np.ndarray:
    """Raster order cut into `stages` equal consecutive groups (all n*n stages by default)."""
    stages = n * n if stages is None else stages
    return (np.arange(n * n) * stages // (n * n)).reshape(n, n).astype(np.int32)


def reference_orders(n: int, stages: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The orders a found one is compared with: raster, and for 4x4 patches the authors' (cut to `stages`)."""
    stages = n * n if stages is None else stages
    orders = [
        ("raster order" + ("" if stages == n * n else f", {stages} equal groups"), raster_pattern(n, stages))
    ]
    if n == 4:
        paper = (np.asarray(PAPER_4X4_ORDER) * stages // 16).astype(np.int32)
        orders.append(("authors' order (mscm4x4-paper)" + ("" if stages == 16 else ", cut"), paper))
    return orders


def model_latent_moments(
    workdir: str, images: str = "samples", max_images: int = 0, n: int = 4
) -> tuple[TapMoments, str]:
    """Moments of the rounded latents `round(g_a(x))` of a trained workdir over a set of images.

    `images` is `samples` (the built-in photos), `samples:SCENE,...` or a folder
    of PNG/JPEG files (`evaluate.load_images`); `max_images` > 0 keeps the first
    ones. Each latent is cropped to the part that covers the image, ceil(H/s) x ceil(W/s)
    at the family's latent stride s. Returns the moments and a one-line
    description of the model and images.
    """
    import jax

    from mscm_jax.model.compression_model import CompressionModel
    from mscm_jax.tools.evaluate import load_images
    from mscm_jax.training.data import to_float
    from mscm_jax.training.train import load_workdir_params

    config, params, step = load_workdir_params(workdir)
    model = CompressionModel(config)
    stride = config.transform_family.latent_stride
    analysis = jax.jit(lambda p, x: model.apply(p, x, method=CompressionModel.analysis))
    loaded = load_images(images, max_images)
    moments = None
    for _, image in loaded:
        y = np.asarray(analysis(params, to_float(image)[None]))
        y = np.round(y[:, : -(-image.shape[0] // stride), : -(-image.shape[1] // stride)])
        part = tap_moments(y, n)
        moments = part if moments is None else moments + part
    names = ", ".join(name for name, _ in loaded)
    about = f"{workdir} (step {step}, {config.transform}, M={config.M}); {len(loaded)} images: {names}"
    return moments, about
