"""mscm-jax: learned image compression with multistage spatial context models.

Lin, Sun, Liu, Katto, "Multistage Spatial Context Models for Learned Image
Compression", ICASSP 2023, arXiv:2302.09263, in JAX/Flax.
"""

from mscm_jax.context import MultistageContext, StageKernel, stage_context, stage_network_inputs
from mscm_jax.entropy_models import (
    DeepFactorized,
    GaussianMixtureConditional,
    gaussian_conditional,
)
from mscm_jax.models import CompressionModel, ForwardResult, Mode, ModelConfig, Rounding, init_model
from mscm_jax.ops import QuantizationMode, quantize
from mscm_jax.schedules import Schedule, ScheduleError, StagePlan, builtin_schedules, get_schedule

__version__ = "0.2.0"

__all__ = [
    "Codec",
    "CompressionModel",
    "DeepFactorized",
    "ForwardResult",
    "GaussianMixtureConditional",
    "Mode",
    "ModelConfig",
    "MultistageContext",
    "QuantizationMode",
    "Rounding",
    "Schedule",
    "ScheduleError",
    "StageKernel",
    "StagePlan",
    "builtin_schedules",
    "gaussian_conditional",
    "get_schedule",
    "init_model",
    "quantize",
    "stage_context",
    "stage_network_inputs",
]


def __getattr__(name: str):
    # The codec (and its coder) loads on first use: `import mscm_jax` for
    # training or the model alone does not pay for it.
    if name == "Codec":
        from mscm_jax.codec import Codec

        return Codec
    raise AttributeError(f"module 'mscm_jax' has no attribute {name!r}")
