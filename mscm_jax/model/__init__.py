"""The model: schedules, stage context, entropy models, layers and transforms.

The bottom layer. Imports nothing else from mscm_jax; training, coding and
the tools build on it.
"""
