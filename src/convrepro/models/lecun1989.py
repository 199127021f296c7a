"""LeCun, Boser, Denker, Henderson, Howard, Hubbard & Jackel 1989: the zip-code network.

Every number below is from the paper (see ``papers/lecun1989.md``): 16x16 input framed with
the background (-1); H1 = 12 maps of 8x8 from 5x5 kernels at stride 2; H2 = 12 maps of 4x4
from 5x5 kernels at stride 2, each map seeing 8 of the 12 H1 maps; H3 = 30 units; 10
outputs; one bias per unit (not per map) in H1 and H2.  1256 units, 64,660 connections,
9,760 free parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from convrepro import nn as cnn
from convrepro.nn.functional import output_size

from .activations import nonlinearity as make_nonlinearity

# The paper does not publish H2's table.  The block scheme of a well-known 2022 reproduction:
# H2 maps 0-3 see H1 maps 0-7, maps 4-7 see H1 maps 4-11, maps 8-11 see maps 0-3 and 8-11.
BLOCK_TABLE = (
    [list(range(0, 8))] * 4 + [list(range(4, 12))] * 4 + [[0, 1, 2, 3, 8, 9, 10, 11]] * 4
)
SUBSAMPLING = ("stride", "decimation")
INIT_FAN = ("F", "sqrt_F")


def connection_table(rows: Sequence[Sequence[int]], in_maps: int = 12) -> torch.Tensor:
    """(out, in) boolean table from, for each output map, the list of input maps it sees."""
    table = torch.zeros(len(rows), in_maps, dtype=torch.bool)
    for d, seen in enumerate(rows):
        for c in seen:
            if not 0 <= int(c) < in_maps:
                raise ValueError(f"connection table row {d} names input map {c}; there are {in_maps}")
            table[d, int(c)] = True
    return table


class FeatureMaps(nn.Module):
    """A subsampled convolutional layer with one bias per output unit (H1, H2).

    ``subsampling="stride"`` convolves at stride 2; ``"decimation"`` convolves at stride 1
    and keeps every other row and column (the lecture files this network under decimation
    pooling).  Both compute the same function; the stride is the decimation folded into
    the convolution, at a quarter of the cost.
    """

    def __init__(self, in_maps: int, out_maps: int, input_size: int, *, kernel: int = 5,
                 step: int = 2, table: torch.Tensor | None = None, subsampling: str = "stride"):
        super().__init__()
        if subsampling not in SUBSAMPLING:
            raise ValueError(f"subsampling must be one of {SUBSAMPLING}, got {subsampling!r}")
        pad = kernel // 2
        stride = step if subsampling == "stride" else 1
        self.conv = cnn.Conv2d(in_maps, out_maps, kernel, stride=stride, padding=pad,
                               pad_value=-1.0, bias=None, connection_table=table)
        self.decimate = cnn.DecimationPool2d(step) if subsampling == "decimation" else None
        size = output_size(input_size, kernel, step, pad)
        self.bias = nn.Parameter(torch.zeros(out_maps, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        if self.decimate is not None:
            z = self.decimate(z)
        return z + self.bias

    def free_parameters(self) -> int:
        return self.conv.free_parameters() + self.bias.numel()

    def connections(self) -> int:
        per_unit = int(self.conv.fan_in()[0]) + 1
        return self.bias.numel() * per_unit


class ZipCodeNet(nn.Module):
    def __init__(
        self,
        nonlinearity: str = "scaled_tanh",
        subsampling: str = "stride",
        h2_table: Sequence[Sequence[int]] = BLOCK_TABLE,
        init_range: float = 2.4,
        init_fan: str = "F",
        output_bias_init: float | None = None,
        dropout: float = 0.0,
        num_classes: int = 10,
    ):
        super().__init__()
        if init_fan not in INIT_FAN:
            raise ValueError(f"init_fan must be one of {INIT_FAN}, got {init_fan!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.h1 = FeatureMaps(1, 12, 16, subsampling=subsampling)
        self.h2 = FeatureMaps(12, 12, 8, subsampling=subsampling,
                              table=connection_table(h2_table))
        self.h3 = nn.Linear(12 * 4 * 4, 30)
        self.output = nn.Linear(30, num_classes)
        self.act1, self.act2, self.act3, self.act_out = (make_nonlinearity(nonlinearity) for _ in range(4))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # 2022 modern variant: ReLU hidden units, linear outputs feeding a softmax.
        if nonlinearity == "relu":
            self.act_out = nn.Identity()
        self.reset_parameters(init_range, init_fan, output_bias_init)

    def reset_parameters(self, init_range: float, init_fan: str, output_bias_init: float | None):
        """U(-r/F, r/F) with F the fan-in of the receiving unit (or sqrt F), biases included."""
        for layer, fan_in in ((self.h1, self.h1.conv.fan_in()[0]), (self.h2, self.h2.conv.fan_in()[0]),
                              (self.h3, self.h3.in_features), (self.output, self.output.in_features)):
            fan = float(fan_in)
            bound = init_range / (fan if init_fan == "F" else math.sqrt(fan))
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound)
        if output_bias_init is not None:
            nn.init.constant_(self.output.bias, output_bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.h1(x))
        x = self.act2(self.h2(x))
        x = self.dropout(x.flatten(1))
        x = self.act3(self.h3(x))
        return self.act_out(self.output(x))

    def stages(self) -> list[tuple[nn.Module, nn.Module]]:
        """(linear layer, nonlinearity) in order: the second-derivative pass of SDLM walks these."""
        return [(self.h1, self.act1), (self.h2, self.act2),
                (nn.Sequential(nn.Flatten(), self.h3), self.act3), (self.output, self.act_out)]

    # The paper's own size figures.
    def free_parameters(self) -> int:
        return (self.h1.free_parameters() + self.h2.free_parameters()
                + sum(p.numel() for p in self.h3.parameters())
                + sum(p.numel() for p in self.output.parameters()))

    def units(self) -> int:
        return 16 * 16 + self.h1.bias.numel() + self.h2.bias.numel() + 30 + self.output.out_features

    def connections(self) -> int:
        return (self.h1.connections() + self.h2.connections()
                + sum(p.numel() for p in self.h3.parameters())
                + sum(p.numel() for p in self.output.parameters()))

    def first_layer_kernels(self) -> torch.Tensor:
        """The 12 learned H1 kernels (12, 5, 5), for the kernel image."""
        return self.h1.conv.weight.detach()[:, 0]
