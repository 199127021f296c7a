"""Nonlinearities by the names the papers use."""

from __future__ import annotations

import torch
from torch import nn


class ScaledTanh(nn.Module):
    """1.7159 tanh(2x/3): f(+-1) = +-1, so targets of +-1 sit in the quasi-linear range.

    The constants are from LeCun et al. 1998 ("Efficient BackProp"); the 1989 paper only
    says "scaled hyperbolic tangent".
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


NONLINEARITIES = {
    "scaled_tanh": ScaledTanh,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "logistic": nn.Sigmoid,
}


def nonlinearity(name: str) -> nn.Module:
    if name not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {name!r}")
    return NONLINEARITIES[name]()


def derivative(module: nn.Module, pre_activation: torch.Tensor) -> torch.Tensor:
    """f'(a) for the nonlinearities above (the second-derivative pass of SDLM needs it)."""
    if isinstance(module, ScaledTanh):
        t = torch.tanh(pre_activation * (2.0 / 3.0))
        return 1.7159 * (2.0 / 3.0) * (1 - t * t)
    if isinstance(module, nn.Tanh):
        t = torch.tanh(pre_activation)
        return 1 - t * t
    if isinstance(module, nn.ReLU):
        return (pre_activation > 0).to(pre_activation.dtype)
    if isinstance(module, nn.Sigmoid):
        s = torch.sigmoid(pre_activation)
        return s * (1 - s)
    raise TypeError(f"no derivative known for {type(module).__name__}")
