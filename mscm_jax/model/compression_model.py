"""The compression model: analysis -> hyperprior + multistage context -> synthesis.

    x --g_a--> y --h_a--> z --Q--> z_hat --h_s--> hyper (2M)
               |                                    |
               Q --> y_hat --MultistageContext(schedule, hyper)--> mixture params
               |
             g_s --> x_hat

The rates are `-log2` of the discretized likelihoods: z under the factorized
density, y under the Gaussian (mixture) conditional whose parameters for each
element come from its stage's context (Lin et al. 2023, Sec. 2; Minnen 2018,
Sec. 2 for the rate terms).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.model.context import MultistageContext, StageKernel, read_stage, write_stage
from mscm_jax.model.entropy_models import (
    ConditionalParams,
    DeepFactorized,
    GaussianMixtureConditional,
    bits_from_likelihoods,
)
from mscm_jax.model.ops import QuantizationMode, pad_to_multiple, quantize
from mscm_jax.model.schedules import Schedule, get_schedule
from mscm_jax.model.transforms import TRANSFORMS, TransformFamily, get_transform_family


class Rounding(str, enum.Enum):
    """What the coder rounds (stored with the model, since the choice is not
    visible in the weights).

    Y: y itself (the MSCM authors' mixture models).
    Y_MINUS_MEAN: y - mean, then the mean is added back (CompressAI's
      single-Gaussian models); needs the means, so stages are sequential.
    """

    Y = "y"
    Y_MINUS_MEAN = "y_minus_mean"


class Mode(str, enum.Enum):
    """TRAIN: noisy proxies and rates for optimization; EVAL: what the coder does."""

    TRAIN = "train"
    EVAL = "eval"


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored with checkpoints and files.

    Attributes:
      transform: "cheng2020-attn" or "mbt2018".
      N, M: hidden and latent channels (paper: N = M = 192; 128 at low rates).
      num_mixtures: K components per element; 1 is a single Gaussian.
      schedule: a built-in schedule name or a JSON stage pattern.
      rounding: "y" or "y_minus_mean" (see `Rounding`).
      synthesis_quantization: how y enters g_s in training, "ste" or "noise".
      compute_dtype: dtype of the transforms ("float32" or "bfloat16"); the
        entropy models, likelihoods and rates are always float32.

    Options that imported CompressAI checkpoints need (`mscm_jax.tools.torch_import`);
    the defaults are this library's own model:
      z_filters: hidden widths of z's deep factorized density (CompressAI: (3, 3, 3, 3)).
      z_median: centre of z's rounding grid, "density" (the density's median,
        by bisection) or "stored" (a `median` parameter: CompressAI's quantiles).
      context_bias: the context convolutions have a bias (CompressAI's serial
        `MaskedConv2d` does).
      entropy_parameter_network: False takes the hyper-synthesis output as the
        entropy parameters directly (`mbt2018-mean`; needs the `hyperprior`
        schedule and a single Gaussian).
    """

    transform: str = "cheng2020-attn"
    N: int = 192
    M: int = 192
    num_mixtures: int = 3
    schedule: str = "mscm4x4-paper"
    rounding: str = "y"
    synthesis_quantization: str = "ste"
    compute_dtype: str = "float32"
    z_filters: tuple[int, ...] = (3, 3, 3)
    z_median: str = "density"
    context_bias: bool = False
    entropy_parameter_network: bool = True

    def __post_init__(self):
        # JSON gives a list; a tuple keeps the config hashable.
        object.__setattr__(self, "z_filters", tuple(self.z_filters))
        if not all(isinstance(f, int) and f >= 1 for f in self.z_filters):
            raise ValueError(f"model.z_filters must be positive integers, got {self.z_filters!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; valid: {', '.join(TRANSFORMS)}")
        for name in ("N", "M", "num_mixtures"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.M < 2:
            raise ValueError(f"model.M must be at least 2 (the attention block halves it), got {self.M}")
        get_schedule(self.schedule)
        valid = {
            "rounding": [r.value for r in Rounding],
            "synthesis_quantization": [QuantizationMode.STE.value, QuantizationMode.NOISE.value],
            "compute_dtype": list(COMPUTE_DTYPES),
            "z_median": ["density", "stored"],
            "context_bias": [False, True],
            "entropy_parameter_network": [True, False],
        }
        for name, options in valid.items():
            if getattr(self, name) not in options:
                raise ValueError(f"model.{name} must be one of {options}, got {getattr(self, name)!r}")
        if self.rounding == Rounding.Y_MINUS_MEAN and self.num_mixtures != 1:
            raise ValueError("rounding 'y_minus_mean' needs a single Gaussian (num_mixtures = 1)")
        if not self.entropy_parameter_network and (self.schedule != "hyperprior" or self.num_mixtures != 1):
            raise ValueError(
                "entropy_parameter_network = False needs the 'hyperprior' schedule and num_mixtures = 1 "
                "(the hyper-synthesis output, 2M channels, is then the scales and means)"
            )

    @property
    def schedule_obj(self) -> Schedule:
        return get_schedule(self.schedule)

    @property
    def transform_family(self) -> TransformFamily:
        """The transforms and the latent geometry (strides) of `transform`."""
        return get_transform_family(self.transform)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(known)}")
        d = dict(d)
        if not isinstance(d.get("schedule", ""), str):
            d["schedule"] = json.dumps(d["schedule"])
        return cls(**d)


@flax.struct.dataclass
class ForwardResult:
    """What a forward pass returns (all float32).

    Attributes:
      x_hat: (B, H, W, 3) reconstruction, not clipped, cropped to the input size.
      y_hat: (B, h, w, M) the quantized (EVAL) or noisy (TRAIN) latent.
      y_likelihoods: (B, h, w, M); z_likelihoods: (B, h/4, w/4, N).
      bits_per_stage: (B, S) bits of y decoded at each stage.
      z_bits: (B,); bpp: (B,) total bits over the input's pixel count.
    """

    x_hat: jax.Array
    y_hat: jax.Array
    y_likelihoods: jax.Array
    z_likelihoods: jax.Array
    bits_per_stage: jax.Array
    z_bits: jax.Array
    bpp: jax.Array


class CompressionModel(nn.Module):
    """The MSCM image codec of one `ModelConfig` (inputs RGB in [0, 1], NHWC)."""

    config: ModelConfig

    def setup(self):
        c = self.config
        family = c.transform_family
        dtype = COMPUTE_DTYPES[c.compute_dtype]
        self.g_a = family.analysis(c.N, c.M, dtype)
        self.g_s = family.synthesis(c.N, c.M, dtype)
        self.h_a = family.hyper_analysis(c.N, c.M, dtype)
        self.h_s = family.hyper_synthesis(c.N, c.M, dtype)
        self.entropy_bottleneck = DeepFactorized(c.N, c.z_filters, stored_median=c.z_median == "stored")
        self.conditional = GaussianMixtureConditional(c.num_mixtures)
        self.context = MultistageContext(
            c.schedule_obj,
            c.M,
            self.conditional.num_parameter_channels(c.M),
            use_context_bias=c.context_bias,
            use_parameter_network=c.entropy_parameter_network,
        )

    # -- the pieces the coder calls one by one ------------------------------

    def analysis(self, x: jax.Array) -> jax.Array:
        """Image (B, H, W, 3) -> y, float32, of the shape `TransformFamily.latent_shapes` gives.

        The image is padded to a multiple of the hyper stride, so that z covers y exactly.
        """
        stride = self.config.transform_family.hyper_stride
        return self.g_a(pad_to_multiple(x, stride)).astype(jnp.float32)

    def hyper_analysis(self, y: jax.Array) -> jax.Array:
        return self.h_a(y).astype(jnp.float32)

    def z_median(self) -> jax.Array:
        """(N,) centre of z's quantization grid (the factorized density's median)."""
        return self.entropy_bottleneck.median()

    def hyper_synthesis(self, z_hat: jax.Array) -> jax.Array:
        return self.h_s(z_hat).astype(jnp.float32)

    def decode_stage(
        self, stage: jax.Array, y_hat: jax.Array, hyper: jax.Array, stage_kernel: StageKernel | None = None
    ) -> jax.Array:
        """Raw entropy parameters of one stage's elements (P, B, h, w, out).

        `stage_kernel`: the stage's context weights at the taps it reads, split
        once by the caller (`MultistageContext.stage_kernels`) instead of
        sliced at every stage.
        """
        return self.context.decode_stage(stage, y_hat, hyper, stage_kernel)

    def synthesis(self, y_hat: jax.Array, image_shape: tuple[int, int]) -> jax.Array:
        x_hat = self.g_s(y_hat).astype(jnp.float32)
        return x_hat[:, : image_shape[0], : image_shape[1]]

    # -- what the coder needs -------------------------------------------------

    def stage_kernels(self, latent_h: int, latent_w: int) -> tuple[StageKernel, ...]:
        """Each stage's context weights at the taps it reads, split once per latent size and padded
        to one tap count, so that one compiled stage program serves every stage
        (`MultistageContext.stage_kernels`)."""
        return tuple(self.context.stage_kernels(latent_h, latent_w))

    def stage_entropy_parameters(
        self, stage: jax.Array, y_hat: jax.Array, hyper: jax.Array, stage_kernel: StageKernel
    ) -> ConditionalParams:
        """Mixture parameters, components first (K, P, B, h, w, M), of stage `stage`'s elements.

        What the coder puts on its fixed-point grid (`integer_cdf.quantize_parameters`)
        to compute the integer CDFs. Needs only the variables of `stage_variables`.
        """
        return self.conditional.split_components_first(self.decode_stage(stage, y_hat, hyper, stage_kernel))

    @staticmethod
    def stage_variables(variables: Any) -> Any:
        """The few arrays `stage_entropy_parameters` reads: passing these, not all of a
        cheng2020 model's ~270, saves the per-call argument handling at every stage."""
        tree = variables["params"]
        return {"params": {"context": tree["context"]} if "context" in tree else {}}

    def z_coding_reach(self, tail_mass: float) -> jax.Array:
        return self.entropy_bottleneck.coding_reach(tail_mass)

    def z_coding_pmf(self, half_width: int) -> jax.Array:
        """(N, 2T + 1) masses of z's symbols `round(z - median) = -T..T`, tails in the end bins."""
        return self.entropy_bottleneck.coding_pmf(half_width)

    # -- what the integer path's calibration reads (`integer_path.convert`) ---

    def quantize_latent(self, y: jax.Array, hyper: jax.Array) -> jax.Array:
        """y_hat as the coder rounds y (given the float hyperprior features)."""
        return self._quantize_latent(y, hyper)[0]

    def all_stage_contexts(self, y_hat: jax.Array) -> jax.Array:
        """Every element's context features (B, H, W, 2M), as its stage sees them."""
        return self.context.all_contexts(y_hat)

    # -- the whole model -----------------------------------------------------

    def __call__(self, x: jax.Array, mode: Mode | str = Mode.TRAIN) -> ForwardResult:
        """Forward pass; TRAIN needs the `noise` rng (`rngs={"noise": key}`)."""
        mode = Mode(mode)
        image_shape = x.shape[1:3]
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        median = self.z_median()
        if mode is Mode.TRAIN:
            z_hat = quantize(z, QuantizationMode.NOISE, rng=self.make_rng("noise"))
        else:
            z_hat = quantize(z, QuantizationMode.ROUND, median)
        z_likelihoods = self.entropy_bottleneck.likelihood(z_hat)
        hyper = self.hyper_synthesis(z_hat)

        if mode is Mode.TRAIN:
            y_tilde = quantize(y, QuantizationMode.NOISE, rng=self.make_rng("noise"))
            params = self.conditional.split(self.context.all_stages(y_tilde, hyper))
            offset = self._rounding_offset(params)
            y_likelihoods = self.conditional.likelihood(y_tilde, params)
            y_synth = quantize(y, self.config.synthesis_quantization, offset, self.make_rng("noise"))
            y_hat = y_tilde
        else:
            y_hat, params = self._quantize_latent(y, hyper)
            y_likelihoods = self.conditional.likelihood(y_hat, params)
            y_synth = y_hat

        x_hat = self.synthesis(y_synth, image_shape)
        plan = self.context.plan(*y.shape[1:3])
        y_bits = bits_from_likelihoods(y_likelihoods).sum(-1).reshape(y.shape[0], -1)
        stage_ids = jnp.asarray(plan.stage_map.ravel())
        bits_per_stage = jax.vmap(lambda b: jax.ops.segment_sum(b, stage_ids, plan.num_stages))(y_bits)
        z_bits = bits_from_likelihoods(z_likelihoods).sum((1, 2, 3))
        bpp = (y_bits.sum(-1) + z_bits) / (image_shape[0] * image_shape[1])
        return ForwardResult(x_hat, y_hat, y_likelihoods, z_likelihoods, bits_per_stage, z_bits, bpp)

    def _rounding_offset(self, params) -> jax.Array | float:
        if self.config.rounding == Rounding.Y_MINUS_MEAN:
            return self.conditional.mean(params)
        return 0.0

    def _quantize_latent(self, y: jax.Array, hyper: jax.Array):
        """Rounded latent and its entropy parameters, as the decoder sees them."""
        if self.config.rounding == Rounding.Y:
            y_hat = jnp.round(y)
            return y_hat, self.conditional.split(self.context.all_stages(y_hat, hyper))
        # y - mean rounding: the means of stage s depend on y_hat of earlier
        # stages, so quantize stage by stage with the decoder's stage function.
        plan = self.context.plan(*y.shape[1:3])

        def step(stage, y_hat):
            params = self.conditional.split(self.context.decode_stage(stage, y_hat, hyper))
            mean = self.conditional.mean(params)
            return write_stage(plan, y_hat, stage, jnp.round(read_stage(plan, y, stage) - mean) + mean)

        y_hat = jax.lax.fori_loop(0, plan.num_stages, step, jnp.zeros_like(y))
        return y_hat, self.conditional.split(self.context.all_stages(y_hat, hyper))


def init_params(model: CompressionModel, rng: jax.Array, image_size: int = 64) -> Any:
    """Freshly initialized parameters (shapes do not depend on image size).

    One compiled call, since run op by op the initializing forward pass would
    compile each of its hundreds of operations apart. On the CPU it is compiled
    without backend optimization: the call runs once, and optimizing the
    initializers' many inlined random-number generators costs more than it saves.
    """
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda key: model.init({"params": key, "noise": key}, x, Mode.TRAIN))
    if isinstance(rng, jax.core.Tracer):  # under eval_shape or jit: compiled with the caller's program
        return init(rng)
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
    return init.lower(rng).compile(compiler_options=options)(rng)


def init_model(config: ModelConfig, rng: jax.Array, image_size: int = 64) -> tuple[CompressionModel, Any]:
    """A model and freshly initialized parameters."""
    model = CompressionModel(config)
    return model, init_params(model, rng, image_size)


def model_fingerprint(config: ModelConfig, params: Any) -> str:
    """sha256 (hex) of the config and every parameter's path, dtype, shape and bytes.

    The identity that model files and bitstreams carry, and that training
    reports. Parameters replicated over several processes hash this process's
    copy, so that every process reports the same value.
    """
    digest = hashlib.sha256(b"mscm-jax model v1\0")
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype.str}|{array.shape}\0".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()
