"""The image codec: a trained model plus real entropy coding into `.mscm` files.

    codec = Codec.load("workdirs/quickstart")           # or an exported .mscm-model
    result = codec.compress(image)                      # uint8 (H, W, 3)
    decoded = codec.decompress(result.data)             # decoded.image: uint8 (H, W, 3)

Everything runs in compiled calls on the accelerator; the host only hands
the stream in and out. Decoding is one call for z (its integer tables, the
rANS decoder and the hyper-synthesis), one call per stage (`_stage_step`:
the stage's entropy parameters, their integer CDFs and the decoding of all
its symbols, written into y_hat) and one for the synthesis. The encoder runs
the same stage program (so both sides compute the same parameters bit for
bit), keeps each stage's integer parameters on the device, and then codes
the stages in reverse (rANS is last in, first out) into one interleaved
stream (`rans`) with one flush per image. The file layout is in `bitstream`
and docs/format.md.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mscm_jax.coding import bitstream, integer_cdf, integer_path, rans
from mscm_jax.coding.programs import Programs
from mscm_jax.coding.programs import enable_compilation_cache as enable_compilation_cache  # the API's
from mscm_jax.images import as_rgb_uint8
from mscm_jax.model import tiling
from mscm_jax.model.compression_model import CompressionModel, Mode, ModelConfig, model_fingerprint
from mscm_jax.model.context import cached_stage_plan, read_stage, write_stage
from mscm_jax.model.ops import pad_to_multiple
from mscm_jax.model.schedules import StagePlan
from mscm_jax.model.tiling import DEFAULT_TILE_PIXELS
from mscm_jax.model.transforms import get_transform_family

MODEL_FILE_SUFFIX = ".mscm-model"
DEFAULT_MAX_PIXELS = 40_000_000  # decoding refuses larger claims (a 4000x3000 photo is 12 M)
Z_TAIL_MASS = 1e-9  # z tables reach the quantiles of this mass on each side
# The stream buffer first tried, in bits per symbol: 16 (one word; 12 bpp at M = 192) holds every
# stream we have seen by far (trained models spend under 3 bits a symbol), and moves a quarter of
# the worst case's bytes (`rans.max_words`, 64 bits a symbol) between host and device.
USUAL_STREAM_BITS = 16
# Images whose sizes round up to the same multiple of this many pixels share the stage programs
# (`Codec`, size_step): at most 3/4 of a step's rows and columns are computed and not coded.
DEFAULT_SIZE_STEP = 256


# --------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timings:
    """Wall seconds of each part, excluding one-time tracing and compilation (`compile`).

    hyper: hyper-analysis (encoder only), coding of z and hyper-synthesis, and the
    stream's buffer (its transfer to the device; the encoder's set-up and flush).
    stages: each y stage in decoding order (decoder: parameters, CDFs and
    decoding, one call; encoder: parameters, then the coding of that stage).
    outside: the part of hyper + stages spent outside compiled calls (Python,
    transfers), the host's share of entropy coding.
    parameters: encoder only, the part of `stages` that computes the entropy
    parameters (the networks), without the coding: what a decoder's stages
    spend besides the coder.
    """

    analysis: float
    hyper: float
    stages: tuple[float, ...]
    synthesis: float
    compile: float
    outside: float = 0.0
    parameters: float = 0.0

    @property
    def entropy_coding(self) -> float:
        """Hyper part plus all stages: on decode, the paper's "entropy decoding"."""
        return self.hyper + sum(self.stages)

    @property
    def total(self) -> float:
        return self.analysis + self.entropy_coding + self.synthesis


@dataclasses.dataclass(frozen=True)
class CompressResult:
    """A compressed image. `y_hat` is the quantized latent the decoder will rebuild.

    Rates: `z_bits` and `stage_bits` are the information content of the coded
    symbols under the integer models (escapes included), the ideal a perfect
    coder would reach. The payload is that ideal plus what the lanes cost
    (`lane_bits`) plus the coder's rounding (`rounding_bits`, either sign).
    `lane_bits` is read from the final states: each lane starts at 2^16, whose 16
    bits carry nothing, and its final state x, flushed as 32 bits, carries
    only log2(x) - 16 of them; so a lane costs 48 - log2(x) bits, 16 to 32.
    """

    data: bytes
    height: int
    width: int
    lanes: int
    z_bits: float
    stage_bits: tuple[float, ...]
    escapes: int
    escape_bits: float
    lane_bits: float
    timings: Timings
    y_hat: np.ndarray
    notices: tuple[str, ...] = ()

    @property
    def payload_bytes(self) -> int:
        return len(self.data) - self.header_bytes

    @property
    def header_bytes(self) -> int:
        return bitstream.header_bytes(self.data)

    @property
    def flush_bytes(self) -> int:
        """The final lane states as written (4 bytes per lane); `lane_bits` is what they cost."""
        return 4 * self.lanes

    @property
    def rounding_bits(self) -> float:
        """Payload bits beyond the ideal and the lanes' cost: the coder's rounding, summed over symbols."""
        return 8 * self.payload_bytes - self.ideal_bits - self.lane_bits

    @property
    def ideal_bits(self) -> float:
        return self.z_bits + sum(self.stage_bits)

    @property
    def bpp(self) -> float:
        """Whole file (header included) over the image's pixels."""
        return 8 * len(self.data) / (self.height * self.width)

    @property
    def payload_bpp(self) -> float:
        """The stream only, as CompressAI counts."""
        return 8 * self.payload_bytes / (self.height * self.width)


@dataclasses.dataclass(frozen=True)
class DecompressResult:
    image: np.ndarray  # uint8 (H, W, 3)
    x_hat: np.ndarray  # float32 (H, W, 3), the synthesis output before clipping and rounding
    y_hat: np.ndarray  # (h, w, M)
    timings: Timings


# --------------------------------------------------------------------------
# Timing the phases of a compress or decompress (the programs themselves: `programs`).
# --------------------------------------------------------------------------

# A GPU decoder's stage program calls a Triton kernel (`rans_kernel`): its custom call has no
# compatibility guarantee, and the artifacts are keyed by jax's version anyway.
_TRITON_CALLS = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]


class _Stopwatch:
    def __init__(self, compiled: Programs):
        self.compiled, self.seconds, self.outside = compiled, {}, 0.0
        self.compile_start = compiled.compile_seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        compile_before, run_before = self.compiled.compile_seconds, self.compiled.run_seconds
        yield
        spent = time.perf_counter() - start - (self.compiled.compile_seconds - compile_before)
        self.seconds.setdefault(name, []).append(spent)
        if name in ("hyper", "stage", "encode"):
            self.outside += spent - (self.compiled.run_seconds - run_before)

    def timings(self) -> Timings:
        get = lambda name: sum(self.seconds.get(name, [0.0]))  # noqa: E731
        return Timings(
            analysis=get("analysis"), hyper=get("hyper"), stages=tuple(self.seconds.get("stage", [])),
            synthesis=get("synthesis"), compile=self.compiled.compile_seconds - self.compile_start,
            outside=max(self.outside, 0.0),
        )  # fmt: skip


# --------------------------------------------------------------------------
# z tables.
# --------------------------------------------------------------------------


def z_cdf_tables(model: CompressionModel, params: Any) -> np.ndarray:
    """(N, 2T + 2) int32: z's per-channel integer CDFs (symbols are offsets from z's median).

    T: the power of two (at most `integer_cdf.MAX_HALF_WIDTH`) that reaches the
    quantiles of `Z_TAIL_MASS` on both sides of every channel's median.
    """
    reach = float(
        jax.jit(lambda p: model.apply(p, Z_TAIL_MASS, method=CompressionModel.z_coding_reach))(params)
    )
    log2_width = np.clip(np.ceil(np.log2(max(reach, 1.0))), 0, integer_cdf.MAX_LOG2_HALF_WIDTH)
    half_width = int(2**log2_width)
    pmf = jax.jit(lambda p: model.apply(p, half_width, method=CompressionModel.z_coding_pmf))(params)
    return integer_cdf.quantize_pmf(np.asarray(pmf))


# --------------------------------------------------------------------------
# The codec.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What one image size needs: its bucket's stage plan, each stage's kernel and element indices.

    The stage programs run on the bucket (`Codec._bucket`), a latent of at
    least the image's; its elements beyond the image's latent are computed,
    never coded, and stay zero, as those beyond an image's edge always are.
    """

    size_step: int  # the bucket's: the image's latent rounded up to multiples of this many pixels
    plan: StagePlan  # of the bucket
    kernels: tuple  # each stage's StageKernel, all padded to one tap count
    # (S, E) per stage: indices into its flattened (P, 1, h, w, M), the image's elements in their
    # order, padded to the bucket's E; None where every stage codes all of them in order.
    elements: jax.Array | None
    counts: jax.Array  # (S,) elements per stage
    host_counts: np.ndarray
    z_shape: tuple[int, int, int]
    num_symbols: int  # the image's: what the lanes are chosen from
    buffer_symbols: int  # the bucket's: what the stream buffers are sized for, one shape per bucket


class Codec:
    """A model ready to code images; compiled functions are built once per shape and reused.

    `lanes`: rANS lanes of the files this codec writes (default: `rans.choose_lanes`).
    `unroll`: coder steps per iteration of its loops (`jax.lax.fori_loop`'s
    `unroll`): the same bits whatever the value; fewer iterations may pay
    where each costs a fixed launch, as on a GPU (`experiments/gpu_coding.py`
    compares); on a 2-core CPU 4 was slower than 1.
    `decode_kernel`: z and each y stage decode in one Pallas kernel
    (`rans_kernel`, Triton on a GPU) instead of an XLA loop of many
    operations per step; the same bits. Elsewhere it runs interpreted (slow).
    `integer`: the model's integer path (`integer_path.convert`); with it the
    entropy parameters are computed in integers and files decode on every
    backend (coder `bitstream.CODER_RANS_INTEGER`).
    `tile_pixels`: the analysis and synthesis run window by window, each of
    at most this many pixels (`model.tiling`; 0: whole images), so that their
    memory is a window's; the windows overlap, which costs computation.
    A file's latent decodes exactly either way; the pixels may differ from a
    decode in other windows by float rounding.
    """

    def __init__(self, config: ModelConfig, params: Any, z_cdf: np.ndarray | None = None,
                 source: str = "", step: int | None = None, lanes: int | None = None,
                 integer: integer_path.IntegerPath | None = None, unroll: int = 1,
                 decode_kernel: bool = False, tile_pixels: int = DEFAULT_TILE_PIXELS,
                 size_step: int = DEFAULT_SIZE_STEP):  # fmt: skip
        if not isinstance(unroll, int) or unroll < 1:
            raise ValueError(
                f"unroll must be a positive integer (coder steps per loop iteration), got {unroll!r}"
            )
        if not isinstance(decode_kernel, bool):
            raise ValueError(f"decode_kernel must be True or False, got {decode_kernel!r}")
        self.config, self.source, self.step, self.unroll = config, source, step, unroll
        self.lanes = _checked_lanes(lanes)
        self.tile_pixels = _checked_tile_pixels(tile_pixels)
        self.decode_kernel = decode_kernel
        self.params = jax.device_put(params)
        self.model = CompressionModel(config)
        self.schedule = config.schedule_obj
        self.family = get_transform_family(config.transform)
        self.size_step = self._checked_size_step(size_step)
        if integer is not None:
            integer_path.check_bounds(integer)
        self.integer = integer
        # Which integer layers read int8 inputs: static, read from the path's clip limits.
        self._int8 = integer_path.int8_inputs(integer) if integer is not None else None
        self.float_fingerprint = model_fingerprint(config, self.params)
        self.fingerprint = self.float_fingerprint
        if integer is not None:
            self.fingerprint = integer_path.integer_fingerprint(self.float_fingerprint, integer)
        self.coder = bitstream.CODER_RANS if integer is None else bitstream.CODER_RANS_INTEGER
        self.z_cdf = np.asarray(
            z_cdf if z_cdf is not None else z_cdf_tables(self.model, self.params), np.int32
        )
        self._z_cdf = jnp.asarray(self.z_cdf)
        # What the entropy-parameter programs (z_step, stage_step) read.
        self._stage_variables = (
            integer if integer is not None else CompressionModel.stage_variables(self.params)
        )
        self._hyper_variables = integer if integer is not None else self.params
        self._compiled = self._new_programs()
        self._layouts: dict[tuple[tuple[int, int], int], _Layout] = {}  # by (latent shape, size step)
        # Zeros and scalars on the device, transferred once (`_zeros_like`, `_scalar`).
        self._constants: dict[tuple, jax.Array] = {}

    # -- loading and export ---------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codec:
        """A training workdir (latest checkpoint, EMA weights if any) or an exported model file."""
        path = epath.Path(path)
        if path.is_dir():
            from mscm_jax.training.train import load_workdir_params

            config, params, step = load_workdir_params(path)
            return cls(config, params, source=str(path), step=step)
        if not path.exists():
            raise FileNotFoundError(
                f"no model at {path}: give a training workdir or a {MODEL_FILE_SUFFIX} file"
            )
        from mscm_jax.coding.model_file import read_model_file

        return read_model_file(path)

    def export(self, path: str | os.PathLike) -> int:
        """Writes one self-contained model file; returns its size in bytes."""
        from mscm_jax.coding.model_file import write_model_file

        return write_model_file(self, path)

    def with_lanes(self, lanes: int | None) -> Codec:
        """This model writing files of `lanes` rANS lanes (None: chosen per image by `rans.choose_lanes`).

        Shares this codec's compiled programs; only the coder's, whose shapes follow the lanes, are new.
        """
        codec = copy.copy(self)
        codec.lanes = _checked_lanes(lanes)
        return codec

    def with_tile_pixels(self, tile_pixels: int) -> Codec:
        """This model running its transforms in windows of at most `tile_pixels` (0: whole images)."""
        codec = copy.copy(self)
        codec.tile_pixels = _checked_tile_pixels(tile_pixels)
        codec._compiled.add(codec._transforms(codec.tile_pixels))  # the other programs do not depend on it
        return codec

    def with_size_step(self, size_step: int) -> Codec:
        """This model coding with its stage programs shared between image sizes that round up to the
        same multiples of `size_step` pixels; 0: programs of each size's own. Files record their
        step, and decoders use the file's."""
        codec = copy.copy(self)
        codec.size_step = codec._checked_size_step(size_step)
        return codec

    def _checked_size_step(self, size_step: int) -> int:
        stride = self.family.hyper_stride
        if isinstance(size_step, (int, np.integer)) and not isinstance(size_step, bool):
            if bitstream.valid_size_step(size_step) and size_step % stride == 0:
                return int(size_step)
        raise ValueError(
            f"size_step must be 0 (programs per image size) or a multiple of {stride} pixels (the "
            f"hyper-analysis stride) up to {bitstream.MAX_SIZE_STEP}, got {size_step!r}"
        )

    def _bucket(self, latent_shape: tuple[int, int], size_step: int) -> tuple[int, int]:
        """The latent the stage programs run on: `latent_shape` with each side rounded up to a
        multiple of `size_step` pixels (0: itself)."""
        if not size_step:
            return latent_shape
        step = size_step // self.family.latent_stride
        return (-(-latent_shape[0] // step) * step, -(-latent_shape[1] // step) * step)

    def _encoder_size_step(self, latent_shape: tuple[int, int]) -> int:
        """The size step a file of this latent is coded with (and records).

        0 for `serial`, whose raster order a wider latent would change, and
        where the bucket would exceed the pixels a decoder accepts by default.
        """
        rows, cols = self._bucket(latent_shape, self.size_step)
        if self.schedule.is_serial or rows * cols * self.family.latent_stride**2 > DEFAULT_MAX_PIXELS:
            return 0
        return self.size_step

    def with_integer_path(self, images: list[np.ndarray]) -> Codec:
        """This model with its integer path, calibrated on `images` (uint8 (H, W, 3))."""
        path = integer_path.convert(self.model, self.params, [as_rgb_uint8(i)[0] for i in images])
        return Codec(self.config, self.params, self.z_cdf, self.source, self.step, self.lanes, path,
                     self.unroll, self.decode_kernel, self.tile_pixels, self.size_step)  # fmt: skip

    # -- compiled pieces ------------------------------------------------------

    def _new_programs(self) -> Programs:
        identity = json.dumps(self.config.to_dict(), sort_keys=True)  # programs depend on it, not on weights
        identity += f"|coder {self.coder}|int8 {self._int8}|unroll {self.unroll}|kernel {self.decode_kernel}"
        donated = {"encode_y": (0,), "encode_z": (0,), "stage_step": (2,)}
        functions = {**self._functions(), **self._transforms(self.tile_pixels)}
        return Programs(functions, donated, identity, disabled_checks=_TRITON_CALLS)

    def _transforms(self, tile_pixels: int) -> dict[str, Callable]:
        """The analysis (and hyper-analysis) and the synthesis, in windows of `tile_pixels` (`tiling`)."""
        model, family, stride = self.model, self.family, self.family.latent_stride
        max_window = tile_pixels // stride**2  # elements of y; 0: whole images

        def analysis(params, x, median, bucket):
            """y, zero-padded to the stage programs' latent (`bucket`: only its shape counts), and z's
            symbols."""
            # Windows of whole z elements, so that the analysis pads none of them (it pads images to those).
            x = pad_to_multiple(x, family.hyper_stride)
            z_stride, reach = family.hyper_stride // stride, family.analysis_reach
            rows, cols = tiling.plan_tiles(
                x.shape[1] // stride, x.shape[2] // stride, max_window, reach, z_stride
            )
            y = tiling.map_tiles(
                lambda w: model.apply(params, w, method=CompressionModel.analysis), x, rows, cols, stride, 1
            )
            z = model.apply(params, y, method=CompressionModel.hyper_analysis)
            y = _pad_latent(y, bucket.shape)
            return y, _to_symbols(z - median)

        def synthesis(params, y_hat, latent):
            """The image of y_hat's first `latent.shape` rows and columns (the rest: a bucket's)."""
            y_hat = y_hat[:, : latent.shape[0], : latent.shape[1]]

            def whole(window):
                shape = (stride * window.shape[1], stride * window.shape[2])
                return model.apply(params, window, shape, method=CompressionModel.synthesis)

            rows, cols = tiling.plan_tiles(*y_hat.shape[1:3], max_window, family.synthesis_reach)
            return tiling.map_tiles(whole, y_hat, rows, cols, 1, stride)

        return {f"analysis_{tile_pixels}": analysis, f"synthesis_{tile_pixels}": synthesis}

    def _functions(self) -> dict[str, Callable]:
        model = self.model
        steps, integer, int8 = self.family.hyper_synthesis_steps, self.integer is not None, self._int8
        k, round_centre = self.config.num_mixtures, self.config.rounding == "y"
        latent_channels, unroll = self.config.M, self.unroll
        if self.decode_kernel:  # Pallas and Triton: 0.15 s of every command's start, only where used
            from mscm_jax.coding import rans_kernel

        def hyper_features(variables, z_symbols, median):
            if integer:
                return integer_path.hyper_synthesis(variables, steps, z_symbols, int8)
            z_hat = z_symbols.astype(jnp.float32) + median
            return model.apply(variables, z_hat, method=CompressionModel.hyper_synthesis)

        def stage_parameters(variables, plan, stage, y_hat, hyper, kernel):
            if integer:
                return integer_path.stage_parameters(
                    variables, plan, stage, y_hat, hyper, kernel, k, round_centre, int8
                )
            p = model.apply(variables, stage, y_hat, hyper, kernel,
                            method=CompressionModel.stage_entropy_parameters)  # fmt: skip
            return integer_cdf.quantize_parameters(p.means, p.scales, p.weights, round_centre)

        def z_step(params, z_cdf, median, z_symbols, words, lanes, bucket, decoding):
            """z's symbols (decoded, or given), the hyper-synthesis, the decoder's state, z's checksum,
            and the zero y_hat the first stage starts from.

            `lanes`: an (L,) array whose length is the stream's lane count;
            `bucket`: an array of the stage programs' latent shape, which the
            hyper-synthesis is zero-padded to. y_hat is made here, on the
            device, because `stage_step` takes it donated (updated in place,
            not copied at every stage).
            """
            shape = z_symbols.shape
            state = rans.new_decoder(words, lanes.shape[0])

            def decode(state):
                if self.decode_kernel:
                    state, flat = rans_kernel.decode_table_segment(state, words, _z_models(shape), z_cdf)
                else:
                    state, flat = rans.decode_segment(
                        state, words, _z_models(shape), *_z_coder(z_cdf), unroll=unroll
                    )
                return state, flat.reshape(shape)

            state, z_symbols = jax.lax.cond(decoding, decode, lambda state: (state, z_symbols), state)
            hyper = hyper_features(params, z_symbols, median)
            hyper = _pad_latent(hyper, bucket.shape)
            y_hat = jnp.zeros((*hyper.shape[:-1], latent_channels), jnp.float32)
            return hyper, state, integer_cdf.symbol_checksum(z_symbols.reshape(-1), 0), y_hat

        def stage_step(variables, stage, y_hat, hyper, kernel, elements, counts, y, words, state, checksum,
                       decoding):  # fmt: skip
            """One stage: integer parameters of its elements, their symbols (decoded, or from y), y_hat.

            One program for every stage (the stage index is traced): `kernel` is
            the stage's, padded to one tap count (`CompressionModel.stage_kernels`),
            `elements` (S, E) every stage's, E padded with out-of-range indices
            past `counts[stage]`, or None: all of the stage's in order (no gathers).
            """
            plan = cached_stage_plan(self.schedule, *y_hat.shape[1:3])
            count = counts[stage]
            packed = stage_parameters(variables, plan, stage, y_hat, hyper, kernel)
            flat = packed.reshape(len(packed), -1)
            index = None if elements is None else elements[stage]

            def gather(v):  # the stage's coded elements of (..., P*h*w*M) values
                return v if index is None else v.at[..., index].get(mode="fill", fill_value=0)

            def scatter(v):  # (E,) values back to their places in (P*h*w*M,)
                return v if index is None else jnp.zeros(flat.shape[1], v.dtype).at[index].set(v, mode="drop")

            params = gather(flat)  # (R, E)
            valid = jnp.arange(params.shape[1]) < count
            centre = params[0].astype(jnp.float32) / (1 << integer_cdf.PARAM_BITS)

            def decode(state):
                if self.decode_kernel:
                    return rans_kernel.decode_mixture_segment(state, words, params, count)
                return rans.decode_segment(
                    state, words, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, count, unroll
                )

            def from_y(state):
                values = gather(read_stage(plan, y, stage).reshape(-1))
                return state, jnp.where(valid, _to_symbols(values - centre), 0)

            state, symbols = jax.lax.cond(decoding, decode, from_y, state)
            y_hat = write_stage(plan, y_hat, stage, scatter(symbols + centre).reshape(packed.shape[1:]))
            # Over the image's widest stage, as if unpadded: the same sum whatever the bucket.
            checksum = checksum + integer_cdf.symbol_checksum(symbols, stage + 1, jnp.max(counts))
            return y_hat, params, symbols, state, checksum

        def encode_y(state, symbols, params, count):
            return rans.encode_segment(
                state, symbols, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, count, unroll
            )

        def encode_z(state, z_symbols, z_cdf):
            return rans.encode_segment(
                state, z_symbols.reshape(-1), _z_models(z_symbols.shape), *_z_coder(z_cdf), unroll=unroll
            )

        def stage_bits(params, symbols, count):
            """Information content of a stage's symbols under their integer models, escapes included."""
            valid = jnp.arange(symbols.shape[0]) < count
            return _ideal_bits(symbols, params, integer_cdf.mixture_cdf, integer_cdf.half_widths, valid)

        def z_bits(z_symbols, z_cdf):
            flat = z_symbols.reshape(-1)
            return _ideal_bits(flat, _z_models(z_symbols.shape), *_z_coder(z_cdf), jnp.ones(flat.shape, bool))

        def stage_kernels(params, latent):  # `latent`: only its shape counts
            return model.apply(params, *latent.shape, method=CompressionModel.stage_kernels)

        return {
            "z_median": lambda p: model.apply(p, method=CompressionModel.z_median),
            "stage_kernels": stage_kernels,
            "z_step": z_step,
            "stage_step": stage_step,
            "encode_y": encode_y,
            "encode_z": encode_z,
            "flush": rans.flush,
            "stage_bits": stage_bits,
            "z_bits": z_bits,
        }

    def _layout(self, latent_shape: tuple[int, int], size_step: int) -> _Layout:
        """The layout of an image of latent `latent_shape` whose stages run on a bucket of `size_step`."""
        key = (latent_shape, size_step)
        if key not in self._layouts:
            bucket = self._bucket(latent_shape, size_step)
            plan = cached_stage_plan(self.schedule, *bucket)
            own = cached_stage_plan(self.schedule, *latent_shape)
            # One compiled call, not dozens of operations dispatched (and compiled) one by one.
            kernels = self._compiled("stage_kernels", self._kernel_variables(), np.zeros(bucket, np.int8))
            m = self.config.M
            elements, width = [], 0
            for s in range(plan.num_stages):  # the image's (P, h, w) entries -> the bucket's (P, 1, h, w, M)
                mask = np.zeros(plan.element_mask(s).shape, bool)
                mask[:, : own.grid[0], : own.grid[1]] = own.element_mask(s)  # the image's order kept
                mask = mask[:, None, :, :, None]
                elements.append(np.flatnonzero(np.broadcast_to(mask, (*mask.shape[:-1], m))))
                width = max(width, int(plan.element_mask(s).sum()) * m)  # the bucket's: one shape per bucket
            counts = np.asarray([len(e) for e in elements], np.int32)
            # None where the patch size divides the latent and no stage has padding entries.
            size = plan.max_positions * plan.grid[0] * plan.grid[1] * m
            indices = None
            if not all(np.array_equal(e, np.arange(size)) for e in elements):
                stacked = np.full((len(elements), width), np.iinfo(np.int32).max, np.int32)
                for s, e in enumerate(elements):
                    stacked[s, : len(e)] = e  # the rest out of range
                indices = jnp.asarray(stacked)
            ratio = self.family.hyper_stride // self.family.latent_stride

            def z_shape(shape):
                return (shape[0] // ratio, shape[1] // ratio, self.config.N)

            def num_symbols(shape):  # y's and z's
                return shape[0] * shape[1] * m + int(np.prod(z_shape(shape)))

            self._layouts[key] = _Layout(
                size_step,
                plan,
                kernels,
                indices,
                jnp.asarray(counts),
                counts,
                z_shape(latent_shape),
                num_symbols(latent_shape),
                num_symbols(bucket),
            )
        return self._layouts[key]

    def _kernel_variables(self) -> Any:
        """The variables `stage_kernels` splits: the integer path's int8 context weights when it has one."""
        if self.integer is None or "context_kernel" not in self.params["params"].get("context", {}):
            return self.params
        tree = self.params["params"]
        return {
            "params": {**tree, "context": {**tree["context"], "context_kernel": self.integer.context.weight}}
        }

    @functools.cached_property
    def _median(self) -> jax.Array:
        """(N,) z's median: one program, loaded when first needed."""
        return self._compiled("z_median", self.params)

    def _z_step_median(self) -> jax.Array:
        """What z_step reads as the median: the integer path starts from z's symbols and the
        offsets it stores, so decoding its files needs no z_median program."""
        return self._zeros_like((self.config.N,), jnp.float32) if self.integer is not None else self._median

    def _zeros_like(self, shape: tuple[int, ...], dtype) -> jax.Array:
        """Zeros on the device, allocated once per shape: placeholders and initial values.

        Made on the host and transferred: `jnp.zeros` would be a program of its
        own to compile in every new process.
        """
        key = (shape, np.dtype(dtype).str)
        if key not in self._constants:
            self._constants[key] = jax.device_put(np.zeros(shape, dtype))
        return self._constants[key]

    def _scalar(self, value: np.generic) -> jax.Array:
        """A NumPy scalar on the device, transferred once (passed as NumPy, it is at every call)."""
        key = (value.item(), value.dtype.str)
        if key not in self._constants:
            self._constants[key] = jax.device_put(value)
        return self._constants[key]

    def estimate(self, x: np.ndarray) -> Any:
        """The model's forward pass (Mode.EVAL) on x (H, W, 3) in [0, 1]: estimated bits, reconstruction."""
        if not hasattr(self, "_forward"):
            self._forward = jax.jit(lambda p, x: self.model.apply(p, x, Mode.EVAL))
        return self._forward(self.params, jnp.asarray(x, jnp.float32)[None])

    # -- compress / decompress -------------------------------------------------

    def stage_models(self, image: np.ndarray) -> tuple[int, list]:
        """(lanes, [(params (R, E), symbols (E,), count) per stage]): what the encoder codes (for tools)."""
        image, _ = as_rgb_uint8(image)
        lanes, _, _, _, _, stages, _ = self._encoder_models(image, _Stopwatch(self._compiled))
        return lanes, stages

    def _encoder_models(self, image: np.ndarray, watch: _Stopwatch):
        """Analysis, z and every stage's integer parameters and symbols, on the device, in decoding order."""
        run = self._compiled
        height, width = image.shape[:2]
        latent_shape, _ = self.family.latent_shapes(height, width)
        layout = self._layout(latent_shape, self._encoder_size_step(latent_shape))
        # From the image's symbols, as files of every version were: sizes of a bucket share their programs
        # where they get the same lanes (most do: the lanes double every 4x the symbols).
        lanes = self.lanes or rans.choose_lanes(layout.num_symbols)
        sizes = _stream_sizes(layout.buffer_symbols, lanes)
        no_words, no_state = self._zeros_like((sizes[0],), jnp.uint16), _idle_decoder(lanes)
        lane_shape = self._zeros_like((lanes,), jnp.int32)
        bucket = self._zeros_like(layout.plan.latent_shape, jnp.int8)
        with watch.phase("analysis"):
            x = jnp.asarray(image.astype(np.float32) / 255.0)[None]
            y, z_symbols = run(f"analysis_{self.tile_pixels}", self.params, x, self._median, bucket)
        with watch.phase("hyper"):
            hyper, _, checksum, y_hat = run(
                "z_step", self._hyper_variables, self._z_cdf, self._z_step_median(), z_symbols, no_words,
                lane_shape, bucket, False,
            )  # fmt: skip
        stages = []
        for stage in range(layout.plan.num_stages):  # parameters and symbols, in decoding order
            with watch.phase("stage"):
                y_hat, params, symbols, _, checksum = self._stage_step(
                    layout, stage, y_hat, hyper, y, no_words, no_state, checksum, decoding=False
                )
            stages.append((params, symbols, np.int32(layout.host_counts[stage])))
        return lanes, sizes, y_hat, z_symbols, checksum, stages, layout.size_step

    def _stage_step(
        self, layout: _Layout, stage: int, y_hat, hyper, y, words, state, checksum, decoding: bool
    ):
        """The compiled `stage_step` of stage `stage`, with its kernel: encoding or decoding."""
        return self._compiled(
            "stage_step", self._stage_variables, self._scalar(np.int32(stage)), y_hat, hyper,
            layout.kernels[stage], layout.elements, layout.counts, y, words, state, checksum,
            self._scalar(np.bool_(decoding)),
        )  # fmt: skip

    def compress(self, image: np.ndarray) -> CompressResult:
        """Codes an image: uint8 (H, W, 3) (grey and RGBA are converted, with a notice)."""
        image, notices = as_rgb_uint8(image)
        height, width = image.shape[:2]
        if height * width > DEFAULT_MAX_PIXELS:
            raise ValueError(
                f"image of {width}x{height} pixels; at most {DEFAULT_MAX_PIXELS} pixels are accepted"
            )
        watch, run = _Stopwatch(self._compiled), self._compiled
        lanes, sizes, y_hat, z_symbols, checksum, stages, size_step = self._encoder_models(image, watch)
        state, buffer, first = self._encode_stream(lanes, sizes[0], stages, z_symbols, watch)
        if first < 0:  # the stream outgrew the usual buffer: code it again into the largest
            watch.seconds["hyper"].extend(watch.seconds.pop("encode"))  # the lost attempt's time
            state, buffer, first = self._encode_stream(lanes, sizes[1], stages, z_symbols, watch)
        if int(state.overflow):
            raise integer_cdf.CodingError(
                f"{int(state.overflow)} latent values beyond the codable range (offsets up to "
                f"{rans.MAX_EXCESS} beyond a table); the model diverged"
            )
        payload = rans.words_to_bytes(np.asarray(buffer)[first:])
        header = self._header(height, width, lanes, int(checksum), size_step)
        data = bitstream.pack(header, payload)
        rates = [run("stage_bits", *stage) for stage in stages]
        stage_bits = [float(bits) for bits, _, _ in rates]
        escapes = sum(int(count) for _, count, _ in rates)
        escape_bits = sum(float(bits) for _, _, bits in rates)
        timings = watch.timings()  # a stage's time: its parameters and its coding
        coded = reversed(watch.seconds.get("encode", []))
        timings = dataclasses.replace(
            timings,
            stages=tuple(a + b for a, b in zip(timings.stages, coded, strict=True)),
            parameters=sum(timings.stages),
        )
        return CompressResult(
            data=data, height=height, width=width, lanes=lanes,
            z_bits=float(run("z_bits", z_symbols, self._z_cdf)[0]), stage_bits=tuple(stage_bits),
            escapes=escapes, escape_bits=escape_bits, lane_bits=_lane_bits(np.asarray(state.x)),
            timings=timings, y_hat=self._image_latent(y_hat, height, width),
            notices=notices,
        )  # fmt: skip

    def _encode_stream(self, lanes: int, size: int, stages: list, z_symbols, watch: _Stopwatch):
        """(state, buffer, first word) of the stream of y's stages and z, in a buffer of `size` words.

        The first word is negative when the stream did not fit (`rans.flush`).
        """
        run = self._compiled
        with watch.phase("hyper"):
            state = jax.device_put(rans.new_encoder(lanes, size - 2 * lanes))
        for params, symbols, count in reversed(stages):  # rANS: the last stage first
            with watch.phase("encode"):
                state = run("encode_y", state, symbols, params, count)
        with watch.phase("hyper"):
            state = run("encode_z", state, z_symbols, self._z_cdf)
            buffer, first = run("flush", state)
        return state, buffer, int(first)

    def decompress(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecompressResult:
        """Decodes a `.mscm` file's bytes; FormatError / CodingError for anything invalid."""
        watch = _Stopwatch(self._compiled)
        header, y_hat = self._decode_latent(data, max_pixels, watch)
        latent = self._zeros_like(self.family.latent_shapes(header.height, header.width)[0], jnp.int8)
        with watch.phase("synthesis"):
            x_hat = self._compiled(f"synthesis_{self.tile_pixels}", self.params, y_hat, latent)
            x_hat = np.asarray(x_hat)[0]
            x_hat = x_hat[: header.height, : header.width]
            image = np.round(np.clip(x_hat, 0.0, 1.0) * 255.0).astype(np.uint8)
        y_hat = self._image_latent(y_hat, header.height, header.width)
        return DecompressResult(image=image, x_hat=x_hat, y_hat=y_hat, timings=watch.timings())

    def decode_latent(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, Timings]:
        """Entropy decoding alone: a `.mscm` file's y_hat (h, w, M) and the timings, no synthesis.

        What `decompress` does before the synthesis, with the same checks; for
        tools that need the latent, and for timing entropy decoding in many
        short runs (`bench coding`).
        """
        watch = _Stopwatch(self._compiled)
        header, y_hat = self._decode_latent(data, max_pixels, watch)
        return self._image_latent(y_hat, header.height, header.width), watch.timings()

    def _decode_latent(self, data: bytes, max_pixels: int, watch: _Stopwatch):
        """(header, y_hat (1, h, w, M) on the device) of a file's bytes, checked."""
        header, payload = bitstream.unpack(bytes(data), max_pixels)
        self._check_header(header)
        run = self._compiled
        latent_shape, _ = self.family.latent_shapes(header.height, header.width)
        self._check_size_step(header, latent_shape, max_pixels)
        layout = self._layout(latent_shape, header.size_step)  # the file's: the encoder's numbers
        words = rans.bytes_to_words(payload)
        if len(words) > (most := _stream_sizes(layout.num_symbols, header.lanes)[1]):
            raise bitstream.FormatError(
                f"payload of {len(payload)} bytes; an image of this size is coded in at most {2 * most}"
            )
        usual, largest = _stream_sizes(layout.buffer_symbols, header.lanes)
        with watch.phase("hyper"):
            size = usual if len(words) <= usual else largest
            words_on_device = jnp.asarray(np.pad(words, (0, size - len(words))))
            z_symbols = self._zeros_like((1, *layout.z_shape), jnp.int32)
            lanes = self._zeros_like((header.lanes,), jnp.int32)
            hyper, state, checksum, y_hat = run(
                "z_step", self._hyper_variables, self._z_cdf, self._z_step_median(), z_symbols,
                words_on_device, lanes, self._zeros_like(layout.plan.latent_shape, jnp.int8), True,
            )  # fmt: skip
        no_y = self._zeros_like(y_hat.shape, y_hat.dtype)
        for stage in range(layout.plan.num_stages):
            with watch.phase("stage"):
                y_hat, _, _, state, checksum = self._stage_step(
                    layout, stage, y_hat, hyper, no_y, words_on_device, state, checksum, decoding=True
                )
        finished = bool(np.all(np.asarray(state.x) == rans.STATE_LOW)) and int(state.position) == len(words)
        if not finished or int(checksum) != header.symbol_checksum:
            cause = "corrupt data, or another model"
            if header.coder == bitstream.CODER_RANS:  # float networks: the writer's platform and version
                cause += ", or a float-path file written on another platform or mscm-jax version"
            raise integer_cdf.CodingError(
                f"invalid compressed data: the stream does not decode to what was encoded ({cause})"
            )
        return header, y_hat

    def _image_latent(self, y_hat: jax.Array, height: int, width: int) -> np.ndarray:
        """(h, w, M) the image's part of a bucket's y_hat (1, H, W, M)."""
        rows, cols = self.family.latent_shapes(height, width)[0]
        return np.asarray(y_hat)[0, :rows, :cols]

    def _header(
        self, height: int, width: int, lanes: int, checksum: int, size_step: int
    ) -> bitstream.FileHeader:
        return bitstream.FileHeader(
            fingerprint=bytes.fromhex(self.fingerprint)[: bitstream.FINGERPRINT_BYTES], height=height,
            width=width, pattern=self._pattern(), lanes=lanes, symbol_checksum=checksum, coder=self.coder,
            size_step=size_step,
        )  # fmt: skip

    def _check_size_step(self, header: bitstream.FileHeader, latent_shape: tuple[int, int], max_pixels: int):
        """The file's size step is one this model's encoder could have written, its bucket within
        `max_pixels`: checked before anything of the bucket's size is allocated."""
        step, stride = header.size_step, self.family.hyper_stride
        if step % stride or (step and self.schedule.is_serial):
            raise bitstream.FormatError(
                f"header claims a size step of {step} pixels; this model's files have multiples of "
                f"{stride}{' (serial: 0)' if self.schedule.is_serial else ''}"
            )
        rows, cols = (side * self.family.latent_stride for side in self._bucket(latent_shape, step))
        if rows * cols > max_pixels:
            raise bitstream.FormatError(
                f"the file's size step of {step} pixels makes its stages run on {cols}x{rows} pixels; "
                f"at most {max_pixels} are accepted"
            )

    def _pattern(self) -> tuple[tuple[int, ...], ...] | None:
        if self.schedule.is_serial:
            return None
        return tuple(map(tuple, np.asarray(self.schedule.pattern).tolist()))

    def _check_header(self, header: bitstream.FileHeader) -> None:
        if header.coder != self.coder:
            needs = "its integer path" if header.coder == bitstream.CODER_RANS_INTEGER else "its float path"
            raise bitstream.FormatError(
                f"the file was coded with {needs} (coder {header.coder}); this model codes with coder "
                f"{self.coder}: use the model file the file names (`mscm-jax models`)"
            )
        mine = bytes.fromhex(self.fingerprint)[: bitstream.FINGERPRINT_BYTES]
        if header.fingerprint != mine:
            raise bitstream.FormatError(
                f"the file was written with another model (fingerprint {header.fingerprint.hex()}, "
                f"this model is {mine.hex()})"
            )
        if header.pattern != self._pattern():
            raise bitstream.FormatError(
                f"the file's schedule {header.pattern} is not this model's {self.schedule.name}"
            )


def _pad_latent(x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """(B, h, w, C) zero-padded after its rows and columns to (B, *shape, C)."""
    return jnp.pad(x, ((0, 0), (0, shape[0] - x.shape[1]), (0, shape[1] - x.shape[2]), (0, 0)))


def _to_symbols(values: jax.Array) -> jax.Array:
    """Rounded to int32 symbols; magnitudes beyond 2^30 are clipped (the coder refuses them anyway)."""
    return jnp.round(jnp.clip(values, -(2.0**30), 2.0**30)).astype(jnp.int32)


def _z_models(shape: tuple[int, ...]) -> jax.Array:
    """z's symbols in raster order (positions, then channels): model i is channel i % N."""
    return jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.int32), shape).reshape(1, -1)


def _z_coder(z_cdf: jax.Array):
    """(cdf_fn, half_width_fn) of the per-channel tables."""
    half_width = integer_cdf.table_half_width(z_cdf)
    return (lambda model, edge: integer_cdf.table_cdf(z_cdf, model[0], edge),
            lambda model: jnp.full(model.shape[1:], half_width, jnp.int32))  # fmt: skip


def _intervals(symbols, models, cdf_fn, half_width_fn):
    """(half widths T, bins, CDF interval starts, frequencies): each symbol's bin under its integer model."""
    t = half_width_fn(models)
    bins = jnp.clip(symbols, -t, t) + t
    start = cdf_fn(models, bins)
    return t, bins, start, cdf_fn(models, bins + 1) - start


def _ideal_bits(symbols, models, cdf_fn, half_width_fn, valid):
    """(bits, escapes, escape bits): -log2 of the symbols' integer probabilities plus the escapes' uniform
    parts (`escape bits`)."""
    t, bins, _, freq = _intervals(symbols, models, cdf_fn, half_width_fn)
    bits = jnp.sum(jnp.where(valid, integer_cdf.PRECISION - jnp.log2(freq.astype(jnp.float32)), 0.0))
    escape = valid & ((bins == 0) | (bins == 2 * t))
    excess = jnp.where(escape, jnp.abs(symbols) - t, 0)
    payload = 31 - jax.lax.clz(jnp.clip(excess, 0, rans.MAX_EXCESS) + 1)
    escape_bits = jnp.sum(jnp.where(escape, rans.LENGTH_BITS + payload, 0))
    escape_bits = escape_bits.astype(jnp.float32)
    return bits + escape_bits, jnp.sum(escape), escape_bits


def _checked_lanes(lanes: int | None) -> int | None:
    if lanes is None or (isinstance(lanes, (int, np.integer)) and not isinstance(lanes, bool)
                         and 1 <= lanes <= rans.MAX_LANES):  # fmt: skip
        return lanes
    raise ValueError(
        f"lanes must be an integer from 1 to {rans.MAX_LANES} (or None: chosen from the image's symbols), "
        f"got {lanes!r}"
    )


def _checked_tile_pixels(pixels: int) -> int:
    if tiling.valid_tile_pixels(pixels):
        return int(pixels)
    least = tiling.MIN_TILE_PIXELS
    raise ValueError(f"tile_pixels must be 0 (whole images) or at least {least}, got {pixels!r}")


def _lane_bits(final_states: np.ndarray) -> float:
    """What the lanes cost in a payload: 48 - log2(x) bits per final state x (`CompressResult`)."""
    start_bits = np.log2(rans.STATE_LOW)  # the known start state: carries nothing
    return float(np.sum(2 * rans.WORD_BITS + start_bits - np.log2(final_states.astype(np.float64))))


def _stream_sizes(num_symbols: int, lanes: int) -> tuple[int, int]:
    """Words of the two stream buffers of an image of `num_symbols` symbols: the usual one and the largest.

    A stream is coded into (decoded from) the usual one when it fits,
    `USUAL_STREAM_BITS` a symbol, else into the largest, which holds every
    stream (`rans.max_words`). The decoder pads a file's words to one of them:
    two shapes, so that the stage program the encoder compiled serves the
    decoder too, without moving the worst case's bytes to the device each
    time (53 MB of uint16 words at 3840x2160 for M = 192; the usual one 13 MB).
    """
    head, largest = 2 * lanes, rans.max_words(num_symbols)  # head: the final states
    usual = min(-(-num_symbols * USUAL_STREAM_BITS // rans.WORD_BITS), largest)
    return usual + head, largest + head


def _idle_decoder(lanes: int) -> rans.DecoderState:
    return rans.DecoderState(*jax.device_put((np.full(lanes, rans.STATE_LOW, np.uint32), np.int32(0))))
