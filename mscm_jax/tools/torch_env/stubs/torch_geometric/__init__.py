"""Stub: see ../README.txt. Not torch_geometric."""

__version__ = "0.0.0+mscm-jax-stub"
