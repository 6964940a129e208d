"""Stub: see ../../README.txt."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torch_geometric is a stub in the mscm-jax reference environment")


class BaseTransform(_Unavailable):
    pass


class Center(_Unavailable):
    pass
