"""Argument checks shared by the hand-written layers.

Every check raises ``ValueError`` naming the argument and the shapes involved, so a
mistake in a model definition is reported where it is made, not as an index error deep
inside an ``as_strided`` call.
"""

from __future__ import annotations

import torch


def pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def positive(value: tuple[int, ...], name: str) -> None:
    if any(v <= 0 for v in value):
        raise ValueError(f"{name} must be positive, got {value}")


def non_negative(value: tuple[int, ...], name: str) -> None:
    if any(v < 0 for v in value):
        raise ValueError(f"{name} must be non-negative, got {value}")


def rank(x: torch.Tensor, expected: int, name: str, layout: str) -> None:
    if x.dim() != expected:
        raise ValueError(f"{name} must have rank {expected} ({layout}), got shape {tuple(x.shape)}")


def window_fits(size: tuple[int, ...], window: tuple[int, ...], what: str, name: str) -> None:
    if any(k > s for k, s in zip(window, size, strict=True)):
        raise ValueError(f"{name} {window} is larger than the {what} {size}")


def pool_args(x, kernel_size, stride, dims, name):
    """(kernel, stride) pairs of a pooling window, checked against ``x``."""
    rank(x, dims, "input", "N, C, H, W" if dims == 4 else "N, C, T")
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    positive(kernel, "kernel_size")
    positive(stride, "stride")
    window_fits(tuple(x.shape[2:]), kernel, "input", f"{name} window")
    return kernel, stride


def time_kernel(x, kernel_size, stride):
    """A 1-D window over time as a (1, k) window on a height-one image."""
    rank(x, 3, "input", "N, C, T")
    return (1, int(kernel_size)), None if stride is None else (1, int(stride))
