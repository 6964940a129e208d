"""Quickstart: a small mscm2x2 model on the built-in sample photos, minutes on a CPU.

    mscm-jax train --config launch/quickstart.py --workdir workdirs/quickstart

The sample photos are a tiny set for demos and tests, not for paper-scale training.
At its end it prints the held-out images' bpp and PSNR, coded for real, beside
WebP's at the nearest bpp on the same images (`--config.compare_with=` to skip).
"""

from mscm_jax.training.configs import QUALITY_LAMBDAS, base_config


def get_config():
    config = base_config()
    config.model.update(transform="mbt2018", N=32, M=32, num_mixtures=3, schedule="mscm2x2")
    config.data.update(crop=64, eval_crop=256, workers=2)
    config.train.update(
        batch_size=8,
        total_steps=600,
        lmbda=QUALITY_LAMBDAS[5],
        learning_rate=1e-3,
        lr_decay_at=(0.8,),
        log_every=25,
        eval_every=200,
        checkpoint_every=200,
    )
    # At the end, `mscm-jax train` codes the held-out images for real and prints the
    # model's bpp and PSNR beside WebP's at the nearest bpp (mscm_jax.tools.baselines).
    config.compare_with = "webp"
    return config
