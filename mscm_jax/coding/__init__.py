"""Coding: integer CDFs, the rANS coder, the integer path, the .mscm format, Codec, model files.

Uses `mscm_jax.model`, and `mscm_jax.training` only to read a workdir's checkpoint.
"""
