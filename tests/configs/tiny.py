"""A tiny model for training tests: compiles in seconds, a step in milliseconds."""

from mscm_jax.training.configs import base_config


def get_config():
    config = base_config()
    config.model.update(transform="mbt2018", N=4, M=4, num_mixtures=2, schedule="mscm2x2")
    config.data.update(crop=32, eval_crop=64, max_eval_images=2, workers=1, prefetch=2)
    config.train.update(
        batch_size=4, total_steps=4, learning_rate=1e-3, lr_decay_at=(0.5,),
        log_every=1, eval_every=2, checkpoint_every=2,
    )  # fmt: skip
    return config
