"""mscm-jax: learned image compression with multistage spatial context models.

Lin, Sun, Liu, Katto, "Multistage Spatial Context Models for Learned Image
Compression", ICASSP 2023, arXiv:2302.09263, in JAX/Flax.

The public API, from the four layers (model < training < coding < tools).
"""

import importlib

from mscm_jax.model.compression_model import (
    CompressionModel,
    ForwardResult,
    Mode,
    ModelConfig,
    Rounding,
    init_model,
)
from mscm_jax.model.context import MultistageContext, StageKernel, stage_context, stage_network_inputs
from mscm_jax.model.entropy_models import DeepFactorized, GaussianMixtureConditional, gaussian_conditional
from mscm_jax.model.ops import QuantizationMode, quantize
from mscm_jax.model.schedules import Schedule, ScheduleError, StagePlan, builtin_schedules, get_schedule

__version__ = "0.3.16"

# The other layers' public names load on first use: `import mscm_jax` for the
# model alone does not pay for Orbax, the coder or their programs.
_LAZY = {
    "Codec": "mscm_jax.coding.codec",
    "CodingError": "mscm_jax.coding.integer_cdf",
    "ModelStore": "mscm_jax.coding.model_store",
    "read_model_file": "mscm_jax.coding.model_file",
    "load_config": "mscm_jax.training.configs",
    "train": "mscm_jax.training.train",
    "load_workdir_params": "mscm_jax.training.train",
    "load_image": "mscm_jax.training.data",
    "load_sample": "mscm_jax.training.data",
    "to_float": "mscm_jax.training.data",
    "evaluate_models": "mscm_jax.tools.evaluate",
}

__all__ = [
    "Codec",
    "CodingError",
    "CompressionModel",
    "DeepFactorized",
    "ForwardResult",
    "GaussianMixtureConditional",
    "Mode",
    "ModelConfig",
    "ModelStore",
    "MultistageContext",
    "QuantizationMode",
    "Rounding",
    "Schedule",
    "ScheduleError",
    "StageKernel",
    "StagePlan",
    "builtin_schedules",
    "evaluate_models",
    "gaussian_conditional",
    "get_schedule",
    "init_model",
    "load_config",
    "load_image",
    "load_sample",
    "load_workdir_params",
    "quantize",
    "read_model_file",
    "stage_context",
    "stage_network_inputs",
    "to_float",
    "train",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mscm_jax' has no attribute {name!r}")
