"""CPU-scale setting of the frozen-transform comparison: a small mbt2018 model on the sample photos.

    python experiments/compare_schedules.py --config experiments/configs/frozen_cpu.py --run-name cpu-small

The base model (trained once, end to end) supplies the analysis and synthesis
transforms; `compare_schedules.py` then trains the entropy model of every
schedule afresh on top of them (`train.total_steps` is the base's budget, the
script's `--steps` the per-schedule budget). Minutes on 2 CPU cores: far from
the paper's scale (cheng2020-attn, N = M = 128..192, 256x256 crops, ~1M steps
on tens of thousands of images).
"""

from mscm_jax.training.configs import QUALITY_LAMBDAS, base_config


def get_config():
    config = base_config()
    # rounding "y": y_hat = round(y) whatever the means, so with frozen transforms
    # the distortion is the same for every schedule by construction.
    config.model.update(transform="mbt2018", N=16, M=16, num_mixtures=3, schedule="mscm2x2", rounding="y")
    config.data.update(crop=64, eval_crop=64, max_eval_images=3, workers=1, prefetch=4)
    config.train.update(
        batch_size=8,
        total_steps=2000,
        lmbda=QUALITY_LAMBDAS[6],
        learning_rate=1e-3,
        lr_decay_at=(0.8,),
        log_every=100,
        eval_every=1000,
        checkpoint_every=1000,
        keep_checkpoints=1,
    )
    return config
