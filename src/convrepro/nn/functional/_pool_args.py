"""Argument checks the pooling layers share (one line naming the mistake)."""

from __future__ import annotations

from . import _checks


def pool_args(x, kernel_size, stride, rank, name):
    _checks.rank(x, rank, "input", "N, C, H, W" if rank == 4 else "N, C, T")
    kernel = _checks.pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _checks.pair(stride, "stride")
    _checks.positive(kernel, "kernel_size")
    _checks.positive(stride, "stride")
    _checks.window_fits(tuple(x.shape[2:]), kernel, "input", f"{name} window")
    return kernel, stride


def time_kernel(x, kernel_size, stride):
    """A 1-D window over time as a (1, k) window on a height-one image."""
    _checks.rank(x, 3, "input", "N, C, T")
    return (1, int(kernel_size)), None if stride is None else (1, int(stride))
