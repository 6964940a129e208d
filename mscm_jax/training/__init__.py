"""Training: ml_collections configs, data sources, the Optax loop and its Orbax workdirs.

Uses `mscm_jax.model` only.
"""
