"""The paper's setting: cheng2020-attn transforms, K = 3 mixture, 256x256 crops, batch 16.

    mscm-jax train --config launch/paper.py:mscm4x4-paper,q3 --workdir workdirs/mscm4x4-paper-q3
    mscm-jax train --config launch/paper.py:checkerboard,q6,mbt2018 --workdir ...

Argument: SCHEDULE,qQ[,mbt2018]. SCHEDULE is any built-in schedule name (for a
pattern of your own, add --config.model.schedule='[[0, 2], [3, 1]]'); Q in
1..6 picks the MSE lambda (0.0018 ... 0.0483) and the channel count (N = M =
128 for q1-3, 192 for q4-6, as the authors' and CompressAI's released models).
`mbt2018` swaps in the Minnen 2018 transforms with CompressAI's conventions
(one Gaussian, y - mean rounding, M = 320 above q4). Data: CLIC through
tensorflow-datasets, downloaded and prepared on first use (on several hosts by
process 0 first), or --config.data.source=folder:PATH.
"""

from mscm_jax.model.schedules import BUILTIN_PATTERNS
from mscm_jax.training.configs import QUALITY_LAMBDAS, ConfigError, base_config

# Each family's published settings at quality q: the authors' and CompressAI's models.
FAMILY_SETTINGS = {
    "cheng2020-attn": lambda q: dict(N=128 if q <= 3 else 192, M=128 if q <= 3 else 192, num_mixtures=3,
                                     rounding="y"),
    "mbt2018": lambda q: dict(N=192, M=192 if q <= 4 else 320, num_mixtures=1, rounding="y_minus_mean"),
}  # fmt: skip


def get_config(arg: str = "mscm4x4-paper,q3"):
    parts = [p.strip() for p in arg.split(",") if p.strip()]
    if len(parts) not in (2, 3) or not parts[1].startswith("q") or not parts[1][1:].isdigit():
        raise ConfigError(
            f"launch/paper.py takes SCHEDULE,qQ[,mbt2018], got {arg!r} (a pattern of your own goes in "
            "--config.model.schedule)"
        )
    schedule, quality = parts[0], int(parts[1][1:])
    if schedule not in BUILTIN_PATTERNS:
        raise ConfigError(f"unknown schedule {schedule!r}; valid: {', '.join(BUILTIN_PATTERNS)}")
    if quality not in QUALITY_LAMBDAS:
        raise ConfigError(f"quality must be q1..q6, got q{quality}")
    family = parts[2] if len(parts) == 3 else "cheng2020-attn"
    if family not in FAMILY_SETTINGS:
        raise ConfigError(f"transform must be one of {', '.join(FAMILY_SETTINGS)}, got {family!r}")

    config = base_config()
    config.model.update(transform=family, schedule=schedule, **FAMILY_SETTINGS[family](quality))
    config.data.update(source="tfds:clic", crop=256, eval_crop=0, max_eval_images=30, workers=8)
    config.train.update(
        batch_size=16,
        total_steps=1_000_000,
        lmbda=QUALITY_LAMBDAS[quality],
        learning_rate=1e-4,
        lr_decay_at=(0.9, 0.95),
        lr_decay=0.1,
        grad_clip=1.0,
        eval_every=10_000,
        checkpoint_every=10_000,
    )
    return config
