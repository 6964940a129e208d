"""Entropy coding of latents with constriction's range coder, stage by stage.

Work in progress toward the codec (issue 4): this module codes and decodes
the latents of one image in memory; the file format, CLI and exported models
come next.

- z: symbols `round(z - median)` under the factorized density, one table per
  channel over that channel's [min, max] of this image (stored), so any value
  is encodable.
- y: for each stage, the encoder and the decoder call the *same* jitted stage
  function (`CompressionModel.decode_stage`) on identical inputs, so both see
  the same floats; the per-element mixture parameters are quantized to a grid
  (means and log-scales to 2^-10, weights to 2^-14) before tables are built,
  so that a last-bit difference rarely changes a table. The support of each
  stage is its symbols' [min, max] (stored), with the tails folded into the
  end bins: no value is ever clipped.
- Every stage is its own range-coded stream with a CRC32 of its symbols;
  the decoder checks that each stream is consumed exactly and that the
  checksum matches, so a divergence is an error, not a wrong image.
"""

from __future__ import annotations

import dataclasses
import zlib

import constriction
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from mscm_jax.context import cached_stage_plan, read_stage, write_stage
from mscm_jax.entropy_models import GaussianMixtureConditional, factorized_likelihood
from mscm_jax.models import CompressionModel, Rounding

# Entropy-model options the streams depend on; a file format records them.
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
PARAM_GRID = 2.0**-10
WEIGHT_GRID = 2.0**-14


class CodingError(ValueError):
    """A stream that does not decode to what was encoded."""


@dataclasses.dataclass(frozen=True)
class StageStream:
    data: bytes
    low: int  # smallest symbol of the stage
    high: int  # largest symbol of the stage
    crc32: int  # of the stage's symbols (int32, little endian)
    num_symbols: int


@dataclasses.dataclass(frozen=True)
class CodedLatents:
    """One image's coded latents: z stream, one stream per y stage, and shapes."""

    image_shape: tuple[int, int]
    latent_shape: tuple[int, int]
    z_shape: tuple[int, int, int]
    z_low: np.ndarray  # (N,) per-channel smallest z symbol
    z_high: np.ndarray
    z_stream: StageStream
    stages: list[StageStream]

    @property
    def payload_bits(self) -> int:
        return 8 * (len(self.z_stream.data) + sum(len(s.data) for s in self.stages))

    @property
    def bits_per_stage(self) -> list[int]:
        return [8 * len(s.data) for s in self.stages]


def _range_encode(symbols: np.ndarray, probabilities: np.ndarray) -> bytes:
    """A range-coded stream; empty when the support is one value (nothing to code)."""
    if probabilities.shape[-1] == 1:
        return b""
    encoder = constriction.stream.queue.RangeEncoder()
    if symbols.size:
        encoder.encode(symbols.astype(np.int32), CATEGORICAL, probabilities.astype(np.float32))
    return encoder.get_compressed().tobytes()


def _range_decode(data: bytes, probabilities: np.ndarray, what: str) -> np.ndarray:
    if probabilities.shape[-1] == 1:  # a one-value support is known without bits.
        if data:
            raise CodingError(f"{what}: {len(data)} bytes where a one-value stage needs none")
        return np.zeros(len(probabilities), np.int32)
    if len(data) % 4:
        raise CodingError(f"{what}: stream length {len(data)} is not a multiple of 4 bytes")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, np.uint32).copy())
    symbols = decoder.decode(CATEGORICAL, probabilities.astype(np.float32)) if len(probabilities) else []
    if not decoder.maybe_exhausted():
        raise CodingError(f"{what}: stream not consumed exactly (corrupt data or another model)")
    return np.asarray(symbols, np.int32)


def _crc(symbols: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(symbols, "<i4").tobytes())


def _check(stream: StageStream, symbols: np.ndarray, what: str) -> None:
    if symbols.size != stream.num_symbols or _crc(symbols) != stream.crc32:
        raise CodingError(f"{what}: decoded symbols fail their checksum (encoder/decoder mismatch)")


def mixture_pmf(values_low: int, values_high: int, means, scales, weights) -> np.ndarray:
    """(E, R) probabilities of the integers low..high under per-element mixtures.

    means/scales/weights: (E, K), already quantized. Tails beyond the range are
    folded into the end bins, so each row sums to 1.
    """
    edges = np.arange(values_low, values_high, dtype=np.float64) + 0.5  # R - 1 inner edges
    z = (edges[None, :, None] - means[:, None, :]) / scales[:, None, :]
    cdf = np.einsum("erk,ek->er", ndtr(z), weights)
    cdf = np.concatenate([np.zeros((len(means), 1)), cdf, np.ones((len(means), 1))], axis=1)
    return np.maximum(np.diff(cdf, axis=1), 0.0)


def _quantize_params(means, scales, weights):
    means = np.round(np.asarray(means, np.float64) / PARAM_GRID) * PARAM_GRID
    scales = np.exp(np.round(np.log(np.asarray(scales, np.float64)) / PARAM_GRID) * PARAM_GRID)
    weights = np.round(np.asarray(weights, np.float64) / WEIGHT_GRID) * WEIGHT_GRID
    weights = np.maximum(weights, WEIGHT_GRID)
    return means, scales, weights / weights.sum(-1, keepdims=True)


_factorized_pmf = jax.jit(factorized_likelihood)


class LatentCoder:
    """Codes the latents of one model; jitted functions are built once and reused."""

    def __init__(self, model: CompressionModel, params):
        self.model, self.params = model, params
        self.rounding = Rounding(model.config.rounding)
        self._analysis = jax.jit(lambda p, x: model.apply(p, x, method=CompressionModel.analysis))
        self._hyper_analysis = jax.jit(lambda p, y: model.apply(p, y, method=CompressionModel.hyper_analysis))
        self._hyper_synthesis = jax.jit(
            lambda p, z: model.apply(p, z, method=CompressionModel.hyper_synthesis)
        )
        self._median = np.asarray(jax.jit(lambda p: model.apply(p, method=CompressionModel.z_median))(params))

        conditional = GaussianMixtureConditional(model.config.num_mixtures)

        def stage_params(p, stage, y_hat, hyper, kernel):
            raw = model.apply(p, stage, y_hat, hyper, kernel, method=CompressionModel.decode_stage)
            dist = conditional.split(raw)
            return dist.means, dist.scales, dist.weights

        self._stage_params = jax.jit(stage_params)
        self._kernels: dict[tuple[int, int], list] = {}

    def _stage_kernels(self, h: int, w: int):
        if (h, w) not in self._kernels:
            self._kernels[(h, w)] = self.model.apply(
                self.params, h, w, method=lambda m, h, w: m.context.stage_kernels(h, w)
            )
        return self._kernels[(h, w)]

    def _z_rows(self, low: np.ndarray, high: np.ndarray, positions: int) -> np.ndarray:
        """(positions * N, R) pmf rows of z symbols low..high, in (h, w, channel) order.

        One table per channel, rows padded to a common width R.
        """
        width = int((high - low).max()) + 1
        offsets = np.arange(width)[:, None] + low[None, :]  # (R, N)
        values = jnp.asarray(offsets + self._median[None, :], jnp.float32)
        density = self.params["params"]["entropy_bottleneck"]
        pmf = np.asarray(_factorized_pmf(density, values), np.float64).T  # (N, R)
        pmf[offsets.T > high[:, None]] = 0.0
        return np.broadcast_to(pmf[None], (positions, *pmf.shape)).reshape(-1, width)

    def _stage_tables(self, stage, y_hat, hyper, plan, kernels):
        means, scales, weights = self._stage_params(
            self.params, jnp.int32(stage), y_hat, hyper, kernels[stage]
        )
        mask = plan.element_mask(stage)  # (P, h, w)
        # (P, B=1, h, w, M, K) -> (E, K) in (P, h, w, M) order.
        pick = lambda a: np.asarray(a)[:, 0][mask].reshape(-1, a.shape[-1])  # noqa: E731
        means, scales, weights = _quantize_params(pick(means), pick(scales), pick(weights))
        if self.rounding is Rounding.Y_MINUS_MEAN:
            centre = np.sum(means * weights, -1, keepdims=True)
            means = means - centre
        else:
            centre = np.zeros((len(means), 1))
        return means, scales, weights, centre[:, 0], mask

    def _place(self, plan, stage, mask, values: np.ndarray, y_hat: jax.Array) -> jax.Array:
        p, h, w = mask.shape
        m = y_hat.shape[-1]
        full = np.zeros((p, 1, h, w, m), np.float32)
        full[:, 0][mask] = values.reshape(-1, m)
        return write_stage(plan, y_hat, jnp.int32(stage), jnp.asarray(full))

    def encode(self, x: np.ndarray) -> tuple[CodedLatents, np.ndarray]:
        """Codes image x (H, W, 3) in [0, 1]; returns the code and the y_hat it decodes to."""
        xb = jnp.asarray(x, jnp.float32)[None]
        y = self._analysis(self.params, xb)
        z = np.asarray(self._hyper_analysis(self.params, y))[0]
        z_sym = np.round(z - self._median).astype(np.int32)
        z_low, z_high = z_sym.min((0, 1)), z_sym.max((0, 1))
        flat = z_sym.reshape(-1, z_sym.shape[-1])
        z_rows = self._z_rows(z_low, z_high, flat.shape[0])
        z_symbols = (flat - z_low[None, :]).reshape(-1)
        z_stream = StageStream(_range_encode(z_symbols, z_rows), 0, 0, _crc(z_symbols), z_symbols.size)

        z_hat = jnp.asarray((z_sym + self._median)[None], jnp.float32)
        hyper = self._hyper_synthesis(self.params, z_hat)
        plan = cached_stage_plan(self.model.config.schedule_obj, *y.shape[1:3])
        kernels = self._stage_kernels(*y.shape[1:3])
        y_hat = jnp.zeros_like(y)
        stages = []
        for s in range(plan.num_stages):
            means, scales, weights, centre, mask = self._stage_tables(s, y_hat, hyper, plan, kernels)
            y_stage = np.asarray(read_stage(plan, y, jnp.int32(s)))[:, 0][mask].reshape(-1)
            symbols = np.round(y_stage - centre).astype(np.int32)
            low, high = (int(symbols.min()), int(symbols.max())) if symbols.size else (0, 0)
            pmf = mixture_pmf(low, high, means, scales, weights)
            stages.append(
                StageStream(_range_encode(symbols - low, pmf), low, high, _crc(symbols), symbols.size)
            )
            y_hat = self._place(plan, s, mask, (symbols + centre).astype(np.float32), y_hat)
        code = CodedLatents(
            image_shape=tuple(x.shape[:2]), latent_shape=tuple(y.shape[1:3]), z_shape=tuple(z.shape),
            z_low=z_low, z_high=z_high, z_stream=z_stream, stages=stages,
        )  # fmt: skip
        return code, np.asarray(y_hat)

    def decode(self, code: CodedLatents) -> np.ndarray:
        """The y_hat (1, h, w, M) of a code; raises CodingError on any inconsistency."""
        rows = self._z_rows(code.z_low, code.z_high, code.z_shape[0] * code.z_shape[1])
        z_symbols = _range_decode(code.z_stream.data, rows, "z")
        _check(code.z_stream, z_symbols, "z")
        z_sym = z_symbols.reshape(code.z_shape) + code.z_low
        z_hat = jnp.asarray((z_sym + self._median)[None], jnp.float32)
        hyper = self._hyper_synthesis(self.params, z_hat)
        plan = cached_stage_plan(self.model.config.schedule_obj, *code.latent_shape)
        kernels = self._stage_kernels(*code.latent_shape)
        y_hat = jnp.zeros((1, *code.latent_shape, self.model.config.M), jnp.float32)
        if len(code.stages) != plan.num_stages:
            raise CodingError(f"{len(code.stages)} stage streams for a schedule of {plan.num_stages} stages")
        for s, stream in enumerate(code.stages):
            means, scales, weights, centre, mask = self._stage_tables(s, y_hat, hyper, plan, kernels)
            pmf = mixture_pmf(stream.low, stream.high, means, scales, weights)
            symbols = _range_decode(stream.data, pmf, f"stage {s}") + stream.low
            _check(stream, symbols, f"stage {s}")
            y_hat = self._place(plan, s, mask, (symbols + centre).astype(np.float32), y_hat)
        return np.asarray(y_hat)
