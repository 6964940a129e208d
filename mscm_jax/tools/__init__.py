"""Tools on top of the library: evaluation, metrics, BD-rate, plots, baselines,
order search, experiment helpers, benchmarks and PyTorch import.

May use every other layer; nothing in the library uses it.
"""
