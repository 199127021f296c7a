"""Pooling modules over the hand-written functions (lecture 9, "Max Pooling")."""

from __future__ import annotations

import torch
from torch import nn

from . import functional as lf
from .functional.temporal_integration import MODES


class _Pool(nn.Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}"


class MaxPool2d(_Pool):
    def forward(self, x):
        return lf.max_pool2d(x, self.kernel_size, self.stride)


class MaxPool1d(_Pool):
    def forward(self, x):
        return lf.max_pool1d(x, self.kernel_size, self.stride)


class AvgPool2d(_Pool):
    def forward(self, x):
        return lf.avg_pool2d(x, self.kernel_size, self.stride)


class AvgPool1d(_Pool):
    def forward(self, x):
        return lf.avg_pool1d(x, self.kernel_size, self.stride)


class DecimationPool2d(nn.Module):
    """Keep every ``factor``-th row and column: the lecture's decimation pooling."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return lf.decimation_pool2d(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class DecimationPool1d(DecimationPool2d):
    def forward(self, x):
        return lf.decimation_pool1d(x, self.factor)


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
