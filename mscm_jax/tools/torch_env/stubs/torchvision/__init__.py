"""Stub: see ../README.txt. Not torchvision."""

__version__ = "0.0.0+mscm-jax-stub"
