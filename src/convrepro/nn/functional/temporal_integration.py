"""Temporal integration, the TDNN's output layer (Waibel et al. 1989): each output unit sums
its own row of hidden-2 activations over all time steps, a pooling over the whole time axis.

    sum:    o[j] = sum_t h[j, t]            dL/dh[j, t] = dL/do[j]
    mean:   o[j] = (1/T) sum_t h[j, t]      dL/dh[j, t] = dL/do[j] / T
    sum_sq: o[j] = sum_t h[j, t]^2          dL/dh[j, t] = 2 h[j, t] dL/do[j]
    max:    o[j] = max_t h[j, t]            dL/dh[j, t] = dL/do[j] at the winning step only

``sum`` and ``mean`` are the paper's integration (average pooling over time, up to a
constant), ``sum_sq`` integrates squared activations (the paper is unclear which), ``max``
is max pooling over time (Yamaguchi et al. 1990).
"""

from __future__ import annotations

import torch

from . import _autograd
from .max_pool import max_pool1d_backward, max_pool1d_forward

MODES = ("sum", "mean", "sum_sq", "max")


def temporal_integration_forward(x, mode="sum"):
    """(o, saved) for ``x`` (N, C, T) -> o (N, C)."""
    if mode == "max":
        out, saved = max_pool1d_forward(x, x.shape[-1])
        return out.squeeze(-1), (mode, x.shape, *saved)
    if mode == "sum_sq":
        return (x * x).sum(-1), (mode, x.shape, x)
    out = x.sum(-1)
    return (out / x.shape[-1] if mode == "mean" else out), (mode, x.shape)


def temporal_integration_backward(grad_out, saved, needs=(True,)):
    """(dL/dh,): each output's gradient copied back to every time step (see the table above)."""
    mode, shape = saved[0], saved[1]
    if mode == "max":
        return max_pool1d_backward(grad_out.unsqueeze(-1), saved[2:], needs)
    spread = grad_out.unsqueeze(-1).expand(*shape)  # (numbers: a torch.Size costs 1 us more)
    if mode == "sum_sq":
        return (2.0 * saved[2] * spread,)
    return ((spread / shape[-1]) if mode == "mean" else spread,)  # a broadcast view: nothing is copied


TemporalIntegration = _autograd.function("TemporalIntegration", temporal_integration_forward,
                                         temporal_integration_backward, 1)


def temporal_integration(x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Pool the whole time axis of ``x`` (N, C, T) -> (N, C)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if x.dim() != 3:
        raise ValueError(f"input must have rank 3 (N, C, T), got shape {tuple(x.shape)}")
    return TemporalIntegration.apply(x, mode)
