"""Stub: see ../../README.txt."""


class Data:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torch_geometric is a stub in the mscm-jax reference environment")
