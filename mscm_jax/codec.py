"""The image codec: a trained model plus real entropy coding into `.mscm` files.

    codec = Codec.load("workdirs/quickstart")           # or an exported .mscm-model
    result = codec.compress(image)                      # uint8 (H, W, 3)
    decoded = codec.decompress(result.data)             # decoded.image: uint8 (H, W, 3)

One stage loop (`Codec._code_latent`) serves the encoder and the decoder:
for each stage of the schedule it calls the same compiled stage function
(`CompressionModel.decode_stage`) on the same partially decoded latent, turns
that stage's parameters into tables (`coding`), and codes that stage's
elements with one vectorized coder call. Parallel schedules write one stream
per stage; `serial` (one element per stage) writes a single y stream.
The file layout is in `bitstream` and docs/format.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mscm_jax import bitstream, coding
from mscm_jax.context import cached_stage_plan
from mscm_jax.entropy_models import (
    GaussianMixtureConditional,
    factorized_likelihood,
    factorized_logits_cumulative,
    factorized_quantile,
)
from mscm_jax.models import CompressionModel, Mode, ModelConfig, Rounding
from mscm_jax.schedules import StagePlan

MODEL_FILE_SUFFIX = ".mscm-model"
DEFAULT_MAX_PIXELS = 40_000_000  # decoding refuses larger claims (a 4000x3000 photo is 12 M)
Z_TAIL_MASS = 1e-9  # z tables reach the quantiles of this mass on each side


def enable_compilation_cache(directory: str | None = None) -> str:
    """Persist compiled XLA programs so that a second run skips JIT compilation.

    Default: $MSCM_JAX_CACHE_DIR or ~/.cache/mscm-jax/jax. Returns the directory.
    """
    directory = (
        directory or os.environ.get("MSCM_JAX_CACHE_DIR") or os.path.expanduser("~/.cache/mscm-jax/jax")
    )
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return directory


# --------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timings:
    """Wall seconds of each part, excluding one-time JIT compilation (`compile`).

    hyper: hyper-analysis (encoder only), coding of z and hyper-synthesis.
    stages: parameters + coding of each y stage, in decoding order.
    """

    analysis: float
    hyper: float
    stages: tuple[float, ...]
    synthesis: float
    compile: float

    @property
    def entropy_coding(self) -> float:
        """Hyper part plus all stages: on decode, the paper's "entropy decoding"."""
        return self.hyper + sum(self.stages)

    @property
    def total(self) -> float:
        return self.analysis + self.entropy_coding + self.synthesis


@dataclasses.dataclass(frozen=True)
class CompressResult:
    """A compressed image. `y_hat` is the quantized latent the decoder will rebuild."""

    data: bytes
    height: int
    width: int
    z_bytes: int
    stream_bytes: tuple[int, ...]  # y streams: one per stage (one in all for serial)
    timings: Timings
    y_hat: np.ndarray
    notices: tuple[str, ...] = ()

    @property
    def payload_bytes(self) -> int:
        return self.z_bytes + sum(self.stream_bytes)

    @property
    def header_bytes(self) -> int:
        return len(self.data) - self.payload_bytes

    @property
    def bpp(self) -> float:
        """Whole file (header included) over the image's pixels."""
        return 8 * len(self.data) / (self.height * self.width)

    @property
    def payload_bpp(self) -> float:
        """Streams only, as CompressAI counts."""
        return 8 * self.payload_bytes / (self.height * self.width)


@dataclasses.dataclass(frozen=True)
class DecompressResult:
    image: np.ndarray  # uint8 (H, W, 3)
    x_hat: np.ndarray  # float32 (H, W, 3), the synthesis output before clipping and rounding
    y_hat: np.ndarray  # (h, w, M)
    timings: Timings
    stream_bytes: tuple[int, ...] = ()  # y streams, as in the file


# --------------------------------------------------------------------------
# Compiled functions, with compilation timed apart.
# --------------------------------------------------------------------------


class _Compiled:
    """jit functions compiled ahead of time per input shape; compile seconds counted apart."""

    def __init__(self, functions: dict[str, Callable]):
        self._jitted = {name: jax.jit(f) for name, f in functions.items()}
        self._cache: dict[tuple, Any] = {}
        self.compile_seconds = 0.0

    def __call__(self, name: str, *args):
        key = (name, *((np.shape(a), getattr(a, "dtype", type(a))) for a in jax.tree.leaves(args)))
        compiled = self._cache.get(key)
        if compiled is None:
            start = time.perf_counter()
            compiled = self._cache[key] = self._jitted[name].lower(*args).compile()
            self.compile_seconds += time.perf_counter() - start
        return compiled(*args)


class _Stopwatch:
    def __init__(self, compiled: _Compiled):
        self.compiled, self.seconds = compiled, {}
        self.compile_start = compiled.compile_seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start, compile_before = time.perf_counter(), self.compiled.compile_seconds
        yield
        spent = time.perf_counter() - start - (self.compiled.compile_seconds - compile_before)
        self.seconds.setdefault(name, []).append(spent)

    def timings(self) -> Timings:
        get = lambda name: sum(self.seconds.get(name, [0.0]))  # noqa: E731
        return Timings(
            analysis=get("analysis"), hyper=get("hyper"), stages=tuple(self.seconds.get("stage", [])),
            synthesis=get("synthesis"), compile=self.compiled.compile_seconds - self.compile_start,
        )  # fmt: skip


# --------------------------------------------------------------------------
# Model identity and z tables.
# --------------------------------------------------------------------------


def model_fingerprint(config: ModelConfig, params: Any) -> str:
    """sha256 (hex) of the config and every parameter's path, dtype, shape and bytes."""
    digest = hashlib.sha256(b"mscm-jax model v1\0")
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype.str}|{array.shape}\0".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def z_tables(params: Any) -> coding.ChannelTables:
    """Per-channel z tables from the factorized density (z symbols are offsets from the median)."""
    density = jax.tree.map(jnp.asarray, params["params"]["entropy_bottleneck"])

    @jax.jit
    def build(density):
        median = factorized_quantile(density, 0.0)
        tail = float(np.log(Z_TAIL_MASS))
        reach = jnp.maximum(
            median - factorized_quantile(density, tail), factorized_quantile(density, -tail) - median
        )
        return median, jnp.max(reach)

    median, reach = build(density)
    half_width = int(
        2 ** np.clip(np.ceil(np.log2(max(float(reach), 1.0))), 0, np.log2(coding.MAX_HALF_WIDTH))
    )
    inner = jnp.arange(1 - half_width, half_width, dtype=jnp.float32)[:, None]  # bins -T+1 .. T-1

    @jax.jit
    def inner_pmf(density, median):
        mass = factorized_likelihood(density, median[None, :] + inner).T  # (N, 2T - 1)
        # The end bins hold the tails; factorized_logits_cumulative takes (channels, samples).
        low = jax.nn.sigmoid(factorized_logits_cumulative(density, (median - half_width + 0.5)[:, None]))
        high = jax.nn.sigmoid(-factorized_logits_cumulative(density, (median + half_width - 0.5)[:, None]))
        return jnp.concatenate([low, mass, high], axis=1)  # (N, 2T + 1)

    pmf = np.maximum(np.asarray(inner_pmf(density, median), np.float64), 0.0)
    return coding.ChannelTables(half_width, pmf.astype(np.float32))


# --------------------------------------------------------------------------
# The codec.
# --------------------------------------------------------------------------


class Codec:
    """A model ready to code images; compiled functions are built once per shape and reused."""

    def __init__(self, config: ModelConfig, params: Any, tables: coding.ChannelTables | None = None,
                 source: str = "", step: int | None = None):  # fmt: skip
        self.config, self.source, self.step = config, source, step
        self.params = jax.tree.map(jnp.asarray, params)
        self.model = CompressionModel(config)
        self.schedule = config.schedule_obj
        self.fingerprint = model_fingerprint(config, self.params)
        self.z = tables if tables is not None else z_tables(self.params)
        self._conditional = GaussianMixtureConditional(config.num_mixtures)
        self._median = np.asarray(
            jax.jit(lambda p: self.model.apply(p, method=CompressionModel.z_median))(self.params), np.float32
        )
        # The stage function reads only the context model: passing its few arrays, not
        # all ~270 of a cheng2020 model, saves the per-call argument handling 16 times over.
        self._context_params = {"params": {"context": self.params["params"]["context"]}}
        self._compiled = _Compiled(self._functions())
        self._kernels: dict[tuple[int, int], list] = {}
        self._elements: dict[tuple[int, int], list] = {}

    # -- loading and export ---------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codec:
        """A training workdir (latest checkpoint, EMA weights if any) or an exported model file."""
        path = epath.Path(path)
        if path.is_dir():
            from mscm_jax.train import load_workdir_params

            config, params, step = load_workdir_params(path)
            return cls(config, params, source=str(path), step=step)
        if not path.exists():
            raise FileNotFoundError(
                f"no model at {path}: give a training workdir or a {MODEL_FILE_SUFFIX} file"
            )
        from mscm_jax.model_file import read_model_file

        return read_model_file(path)

    def export(self, path: str | os.PathLike) -> int:
        """Writes one self-contained model file; returns its size in bytes."""
        from mscm_jax.model_file import write_model_file

        return write_model_file(self, path)

    # -- compiled pieces ------------------------------------------------------

    def _functions(self) -> dict[str, Callable]:
        model, conditional = self.model, self._conditional

        round_centre = self.config.rounding == Rounding.Y  # symbols round(y) - centre: y_hat = round(y)

        def stage_parameters(params, stage, y_hat, hyper, kernel):
            raw = model.apply(params, stage, y_hat, hyper, kernel, method=CompressionModel.decode_stage)
            dist = conditional.split_components_first(raw[:, 0])  # (K, P, h, w, M)
            # (2 + 3K, P, h, w, M): centres, table widths and quantized parameters, in one array.
            return coding.coding_parameters(dist.means, dist.scales, dist.weights, round_centre)

        return {
            "analysis": lambda p, x: model.apply(p, x, method=CompressionModel.analysis),
            "hyper_analysis": lambda p, y: model.apply(p, y, method=CompressionModel.hyper_analysis),
            "hyper_synthesis": lambda p, z: model.apply(p, z, method=CompressionModel.hyper_synthesis),
            "stage_parameters": stage_parameters,
            "synthesis": lambda p, y: model.apply(
                p, y, (16 * y.shape[1], 16 * y.shape[2]), method=CompressionModel.synthesis
            ),
        }

    def _stage_kernels(self, h: int, w: int) -> list:
        if (h, w) not in self._kernels:
            self._kernels[(h, w)] = self.model.apply(
                self.params, h, w, method=lambda m, h, w: m.context.stage_kernels(h, w)
            )
        return self._kernels[(h, w)]

    def _stage_elements(self, plan: StagePlan) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Per stage: latent rows and columns of its elements, and its entry mask (None: all entries)."""
        if plan.latent_shape not in self._elements:
            masks = [plan.element_mask(s) for s in range(plan.num_stages)]
            self._elements[plan.latent_shape] = [
                (*plan.element_coordinates(s), None if mask.all() else mask) for s, mask in enumerate(masks)
            ]
        return self._elements[plan.latent_shape]

    def estimate(self, x: np.ndarray) -> Any:
        """The model's forward pass (Mode.EVAL) on x (H, W, 3) in [0, 1]: estimated bits, reconstruction."""
        if not hasattr(self, "_forward"):
            self._forward = jax.jit(lambda p, x: self.model.apply(p, x, Mode.EVAL))
        return self._forward(self.params, jnp.asarray(x, jnp.float32)[None])

    # -- the one stage loop ---------------------------------------------------

    def _stage_models(self, plan: StagePlan, stage: int, y_hat: np.ndarray, hyper, kernels):
        """(rows, cols) of the stage's elements, their ElementModels (E*M) and centres (E*M,)."""
        # numpy arguments: the call transfers them, without a dispatch of its own for each.
        packed = np.asarray(
            self._compiled(
                "stage_parameters", self._context_params, np.int32(stage), y_hat[None], hyper, kernels[stage]
            )
        )
        rows, cols, mask = self._stage_elements(plan)[stage]
        # (2 + 3K, E*M), elements in (P, h, w, M) order; no copy when every entry is a latent element.
        packed = packed.reshape(len(packed), -1) if mask is None else packed[:, mask].reshape(len(packed), -1)
        if not np.isfinite(packed).all():
            raise coding.CodingError(f"stage {stage}: non-finite entropy parameters (corrupt data or model)")
        centre = packed[0].astype(np.float64)
        if np.abs(centre).max(initial=0.0) > 2.0**30:
            raise coding.CodingError(
                f"stage {stage}: entropy parameters out of range (corrupt data or model)"
            )
        models = coding.ElementModels(packed[2:], packed[1].astype(np.int64))
        return rows, cols, models, centre

    def _code_latent(self, hyper, latent_shape: tuple[int, int], watch: _Stopwatch,
                     y: np.ndarray | None = None, streams: list[bytes] | None = None,
                     expected_crcs: tuple[int, ...] = ()):  # fmt: skip
        """Encodes y (given) or decodes `streams` (checked against their CRCs).

        Returns (y_hat, stream bytes, CRCs).
        """
        encoding = y is not None
        plan = cached_stage_plan(self.schedule, *latent_shape)
        kernels = self._stage_kernels(*latent_shape)
        y_hat = np.zeros((*latent_shape, self.config.M), np.float32)
        per_stage = not self.schedule.is_serial
        num_streams = plan.num_stages if per_stage else 1
        if not encoding and len(streams) != num_streams:
            raise bitstream.FormatError(
                f"{len(streams)} y streams where this model's schedule needs {num_streams}"
            )
        out, crcs, crc = [], [], 0
        coder = None
        for stage in range(plan.num_stages):
            with watch.phase("stage"):
                index = stage if per_stage else 0
                what = f"y stage {stage}" if per_stage else "y"
                if coder is None:
                    coder = coding.new_encoder() if encoding else coding.new_decoder(streams[index], what)
                rows, cols, models, centre = self._stage_models(plan, stage, y_hat, hyper, kernels)
                if encoding:
                    symbols = np.round(y[rows, cols].reshape(-1) - centre).astype(np.int64)
                    coding.encode_offsets(coder, symbols, models)
                else:
                    with coding.invalid_data_as_coding_error(what):
                        symbols = coding.decode_offsets(coder, models)
                y_hat[rows, cols] = (symbols + centre).astype(np.float32).reshape(len(rows), -1)
                crc = coding.symbol_crc(symbols, crc)
                if per_stage or stage == plan.num_stages - 1:
                    if encoding:
                        out.append(coding.finish(coder))
                    else:
                        coding.check_consumed(coder, what)
                        if crc != expected_crcs[index]:
                            raise coding.CodingError(f"{what}: decoded symbols fail their checksum")
                    crcs.append(crc)
                    coder, crc = None, 0
        return y_hat, out, crcs

    # -- compress / decompress -------------------------------------------------

    def compress(self, image: np.ndarray) -> CompressResult:
        """Codes an image: uint8 (H, W, 3) (grey and RGBA are converted, with a notice)."""
        image, notices = _as_rgb_uint8(image)
        height, width = image.shape[:2]
        if height * width > DEFAULT_MAX_PIXELS:
            raise ValueError(
                f"image of {width}x{height} pixels; at most {DEFAULT_MAX_PIXELS} pixels are accepted"
            )
        watch = _Stopwatch(self._compiled)
        with watch.phase("analysis"):
            x = jnp.asarray(image.astype(np.float32) / 255.0)[None]
            y = np.asarray(self._compiled("analysis", self.params, x))[0]
        with watch.phase("hyper"):
            z = np.asarray(self._compiled("hyper_analysis", self.params, jnp.asarray(y[None])))[0]
            z_symbols = np.round(z - self._median).astype(np.int64)
            encoder = coding.new_encoder()
            self.z.encode(encoder, z_symbols.reshape(-1, z.shape[-1]))
            z_stream = coding.finish(encoder)
            hyper = self._hyper(z_symbols)
        header = self._header(height, width, ())
        z_crc = coding.symbol_crc(z_symbols, _header_crc(header))
        y_hat, y_streams, crcs = self._code_latent(hyper, y.shape[:2], watch, y=y)
        streams = [z_stream, *y_streams]
        header = dataclasses.replace(
            header, stream_lengths=tuple(map(len, streams)), stream_crcs=(z_crc, *crcs)
        )
        data = bitstream.pack(header, streams)
        return CompressResult(
            data=data, height=height, width=width, z_bytes=len(z_stream),
            stream_bytes=tuple(map(len, y_streams)), timings=watch.timings(), y_hat=y_hat, notices=notices,
        )  # fmt: skip

    def decompress(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecompressResult:
        """Decodes a `.mscm` file's bytes; FormatError / CodingError for anything invalid."""
        header, streams = bitstream.unpack(bytes(data), max_pixels)
        self._check_header(header)
        watch = _Stopwatch(self._compiled)
        latent_shape, z_shape = _latent_shapes(header.height, header.width)
        with watch.phase("hyper"):
            decoder = coding.new_decoder(streams[0], "z")
            with coding.invalid_data_as_coding_error("z"):
                z_symbols = self.z.decode(decoder, z_shape[0] * z_shape[1]).reshape(*z_shape, -1)
            coding.check_consumed(decoder, "z")
            if coding.symbol_crc(z_symbols, _header_crc(header)) != header.stream_crcs[0]:
                raise coding.CodingError("z: decoded symbols fail their checksum (or the header was altered)")
            hyper = self._hyper(z_symbols)
        y_hat, _, _ = self._code_latent(
            hyper, latent_shape, watch, streams=streams[1:], expected_crcs=header.stream_crcs[1:]
        )
        with watch.phase("synthesis"):
            x_hat = np.asarray(self._compiled("synthesis", self.params, jnp.asarray(y_hat[None])))[0]
            x_hat = x_hat[: header.height, : header.width]
            image = np.round(np.clip(x_hat, 0.0, 1.0) * 255.0).astype(np.uint8)
        return DecompressResult(
            image=image,
            x_hat=x_hat,
            y_hat=y_hat,
            timings=watch.timings(),
            stream_bytes=header.stream_lengths[1:],
        )

    def _hyper(self, z_symbols: np.ndarray) -> jax.Array:
        z_hat = z_symbols.astype(np.float32) + self._median  # = the model's round(z - median) + median
        # Waited for: its time is the hyper phase's, not stage 0's (JAX dispatches asynchronously).
        return self._compiled("hyper_synthesis", self.params, jnp.asarray(z_hat[None])).block_until_ready()

    def _header(self, height: int, width: int, crcs: tuple[int, ...]) -> bitstream.FileHeader:
        pattern = (
            None if self.schedule.is_serial else tuple(map(tuple, np.asarray(self.schedule.pattern).tolist()))
        )
        return bitstream.FileHeader(
            fingerprint=bytes.fromhex(self.fingerprint)[: bitstream.FINGERPRINT_BYTES], height=height,
            width=width, pattern=pattern, stream_lengths=(), stream_crcs=crcs,
        )  # fmt: skip

    def _check_header(self, header: bitstream.FileHeader) -> None:
        mine = bytes.fromhex(self.fingerprint)[: bitstream.FINGERPRINT_BYTES]
        if header.fingerprint != mine:
            raise bitstream.FormatError(
                f"the file was written with another model (fingerprint {header.fingerprint.hex()}, "
                f"this model is {mine.hex()})"
            )
        if header.pattern != self._header(1, 1, ()).pattern:
            raise bitstream.FormatError(
                f"the file's schedule {header.pattern} is not this model's {self.schedule.name}"
            )


def _header_crc(header: bitstream.FileHeader) -> int:
    """CRC of the header fields the decoded image depends on; seeds z's symbol checksum."""
    pattern = b"" if header.pattern is None else bytes(np.asarray(header.pattern, np.uint8).ravel())
    return zlib.crc32(header.fingerprint + struct.pack("<II", header.height, header.width) + pattern)


def _latent_shapes(height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """y (h, w) and z (h, w) of an image: the analysis pads the image to a multiple of 64."""
    zh, zw = -(-height // 64), -(-width // 64)
    return (4 * zh, 4 * zw), (zh, zw)


def _as_rgb_uint8(image: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2), ("grayscale image converted to RGB",)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3]), ("RGBA image: alpha channel dropped",)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a grayscale, RGB or RGBA image, got shape {image.shape}")
    return image, ()
