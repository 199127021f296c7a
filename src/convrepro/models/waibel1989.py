"""Waibel, Hanazawa, Hinton, Shikano & Lang 1989: the time-delay neural network, and the
fixed-position network it was designed to beat.

TDNN (papers/waibel1989.md): 16 coefficients x 15 frames -> hidden 1: 8 units, each seeing
16 coefficients x 3 frames, the same weights at every time step (8x13) -> hidden 2: 3
units seeing 8 x 5 frames (3x9) -> output j integrates its own hidden-2 row over the 9
steps.  Logistic units.  392 + 123 free parameters in the two time-delay layers.
"""

from __future__ import annotations

import torch
from torch import nn

from convrepro import nn as cnn

from .activations import nonlinearity as make_nonlinearity

OUTPUTS = ("logistic", "none")


class TimeDelayNet(nn.Module):
    def __init__(self, coefficients: int = 16, frames: int = 15, hidden1: int = 8, delays1: int = 3,
                 hidden2: int = 3, delays2: int = 5, integration: str = "sum", output: str = "logistic",
                 output_bias: bool = True, average_shared_gradients: bool = False, init_range: float = 0.5,
                 nonlinearity: str = "logistic"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if frames - delays1 + 1 - delays2 + 1 < 1:
            raise ValueError(f"frames={frames} is too few for delays {delays1} and {delays2}")
        self.hidden1 = cnn.Conv1d(coefficients, hidden1, delays1)
        self.hidden2 = cnn.Conv1d(hidden1, hidden2, delays2)
        self.act1, self.act2 = make_nonlinearity(nonlinearity), make_nonlinearity(nonlinearity)
        self.integrate = cnn.TemporalIntegration(integration)
        # "0 free parameters (or a bias)": a bias lets a logistic output reach 0 from a sum >= 0.
        self.output_bias = nn.Parameter(torch.zeros(hidden2)) if output_bias else None
        self.output = make_nonlinearity("logistic") if output == "logistic" else nn.Identity()
        self.steps = (frames - delays1 + 1, frames - delays1 + 1 - delays2 + 1)
        self.average_shared_gradients = average_shared_gradients
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        if average_shared_gradients:
            # Waibel et al. kept the time-shifted copies equal by averaging their gradients;
            # autograd sums them, which scales the layer's learning rate by 13 and 9.
            for layer, copies in ((self.hidden1, self.steps[0]), (self.hidden2, self.steps[1])):
                for p in layer.parameters():
                    p.register_hook(lambda g, c=copies: g / c)

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = self.act1(self.hidden1(x))
        return h1, self.act2(self.hidden2(h1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h2 = self.hidden(x)
        z = self.integrate(h2)
        if self.output_bias is not None:
            z = z + self.output_bias
        return self.output(z)

    def time_delay_parameters(self) -> int:
        return sum(p.numel() for layer in (self.hidden1, self.hidden2) for p in layer.parameters())

    def first_layer_kernels(self) -> torch.Tensor:
        """Hidden-1 weights as 8 images of 16 coefficients x 3 frames."""
        return self.hidden1.weight.detach()


class FixedPositionNet(nn.Module):
    """The baseline: a fully connected net on the same 16 x 15 window, with no time sharing.

    With ``hidden=2`` it has 491 weights, about the TDNN's 515 + 3: the comparison the
    shift-invariance claim needs (what each architecture does with a similar budget).
    """

    def __init__(self, coefficients: int = 16, frames: int = 15, hidden: int = 2, classes: int = 3,
                 init_range: float = 0.5, nonlinearity: str = "logistic", output: str = "logistic"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(coefficients * frames, hidden),
                                 make_nonlinearity(nonlinearity), nn.Linear(hidden, classes),
                                 make_nonlinearity("logistic") if output == "logistic" else nn.Identity())
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
