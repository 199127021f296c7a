"""Convolution modules: the lecture's convolution plus what the papers add to it.

* ``connection_table`` (D, C) boolean: which input maps each output map sees (LeCun's H2
  sees 8 of 12 H1 maps).  Connections the table removes are not free parameters.
* ``bias="map"`` (one per output map), ``"unit"`` (one per output unit, LeCun 1989; needs
  ``input_size`` to know the output's size) or ``None``.
* ``groups``: AlexNet's two-GPU split.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import functional as lf
from .functional import _checks
from .functional.sizes import output_size

BIAS_KINDS = ("map", "unit", None)


class _ConvNd(nn.Module):
    spatial_dims: int

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 pad_value: float = 0.0, groups: int = 1, bias: str | None = "map", connection_table=None,
                 input_size=None):
        super().__init__()
        n = self.spatial_dims
        kernel = _as_tuple(kernel_size, n, "kernel_size")
        _checks.positive(kernel, "kernel_size")
        # as given (for the repr), and as one int per spatial dimension (for the pairs)
        self.stride_tuple, self.padding_tuple = _as_tuple(stride, n, "stride"), _as_tuple(padding, n, "padding")
        _checks.positive(self.stride_tuple, "stride")
        _checks.non_negative(self.padding_tuple, "padding")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide both in_channels ({in_channels}) and "
                f"out_channels ({out_channels})"
            )
        if bias not in BIAS_KINDS:
            raise ValueError(f"bias must be one of {BIAS_KINDS}, got {bias!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = kernel
        self.stride, self.padding = stride, padding
        self.pad_value = float(pad_value)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel))

        if connection_table is not None:
            table = torch.as_tensor(connection_table, dtype=torch.bool)
            if groups != 1:
                raise ValueError("a connection_table replaces groups: use one or the other")
            if tuple(table.shape) != (out_channels, in_channels):
                raise ValueError(
                    f"connection_table must have shape (out_channels, in_channels) = "
                    f"({out_channels}, {in_channels}), got {tuple(table.shape)}"
                )
            blind = (~table.any(dim=1)).nonzero().flatten().tolist()
            if blind:
                raise ValueError(f"connection_table: output map(s) {blind} see no input map")
            self.register_buffer("connection_table", table)
            # The same table as a multiplier, kept so forward does not convert it every call.
            self.register_buffer("connection_mask", table.to(torch.get_default_dtype())
                                 .view(*table.shape, *([1] * n)), persistent=False)
        else:
            self.connection_table = self.connection_mask = None

        self.output_size = None
        if input_size is not None:
            size = _as_tuple(input_size, n, "input_size")
            padded = tuple(s + 2 * p for s, p in zip(size, self.padding_tuple, strict=True))
            _checks.window_fits(padded, kernel, "padded input", "kernel")
            self.output_size = tuple(
                output_size(p, k, s)
                for p, k, s in zip(padded, kernel, self.stride_tuple, strict=True)
            )
        if bias == "unit":
            if self.output_size is None:
                raise ValueError('bias="unit" (one bias per output unit) needs input_size')
            self.bias = nn.Parameter(torch.empty(out_channels, *self.output_size))
        elif bias == "map":
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.bias_kind = bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default (uniform in +-1/sqrt(fan_in)); the models apply their paper's init."""
        bound = 1.0 / math.sqrt(self.fan_in().float().mean().item())
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def fan_in(self) -> torch.Tensor:
        """Inputs seen by each output map (the table reduces it): shape (D,)."""
        per_channel = math.prod(self.kernel_size)
        if self.connection_table is None:
            return torch.full((self.out_channels,), self.weight.shape[1] * per_channel)
        return self.connection_table.sum(dim=1) * per_channel

    def effective_weight(self) -> torch.Tensor:
        if self.connection_table is None:
            return self.weight
        if self.connection_mask.dtype != self.weight.dtype:
            self.connection_mask = self.connection_mask.to(self.weight.dtype)
        return self.weight * self.connection_mask

    def free_parameters(self) -> int:
        """Weights the table keeps plus biases (the count LeCun et al. report)."""
        bias = 0 if self.bias is None else self.bias.numel()
        return int(self.fan_in().sum().item()) + bias

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.pad_value:
            s += f", pad_value={self.pad_value}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.connection_table is not None:
            s += f", connection_table={int(self.connection_table.sum())}/{self.connection_table.numel()}"
        return s + f", bias={self.bias_kind}"


class Conv2d(_ConvNd):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, pad_value=0.0,
    groups=1, bias="map", connection_table=None, input_size=None)``."""

    spatial_dims = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lf.conv2d(x, self.effective_weight(), self.bias, stride=self.stride,
                         padding=self.padding, pad_value=self.pad_value, groups=self.groups)


class Conv1d(_ConvNd):
    """Time-delay layer: each output unit sees ``kernel_size`` consecutive frames."""

    spatial_dims = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lf.conv1d(x, self.effective_weight(), self.bias, stride=self.stride_tuple[0],
                         padding=self.padding_tuple[0],
                         pad_value=self.pad_value, groups=self.groups)


def _as_tuple(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or {n} ints, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * n
