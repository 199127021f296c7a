"""Pooling modules over the hand-written pairs (lecture 9, "Max Pooling", "Other types of pooling")."""

from __future__ import annotations

import torch
from torch import nn

from . import functional as lf
from .functional.temporal_integration import MODES


class _Pool(nn.Module):
    pool: staticmethod  # the functional form each subclass names

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return self.pool(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class MaxPool2d(_Pool):
    pool = staticmethod(lf.max_pool2d)


class MaxPool1d(_Pool):
    pool = staticmethod(lf.max_pool1d)


class AvgPool2d(_Pool):
    pool = staticmethod(lf.avg_pool2d)


class AvgPool1d(_Pool):
    pool = staticmethod(lf.avg_pool1d)


class DecimationPool2d(nn.Module):
    """Keep every ``factor``-th row and column: the lecture's decimation pooling."""

    pool = staticmethod(lf.decimation_pool2d)

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.pool(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class DecimationPool1d(DecimationPool2d):
    pool = staticmethod(lf.decimation_pool1d)


class TemporalIntegration(nn.Module):
    """Pool a whole time axis (N, C, T) -> (N, C): the TDNN's output layer (Waibel et al. 1989);
    ``mode`` is ``sum``, ``mean``, ``sum_sq`` or ``max`` (see ``functional.temporal_integration``)."""

    MODES = MODES

    def __init__(self, mode: str = "sum"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lf.temporal_integration(x, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"
