"""Decimation pooling (lecture 9): keep every M-th sample, a[m] = z[mM]; the backward scatters
the gradient into zeros (the samples dropped had no effect)."""

from __future__ import annotations

import torch

from . import _autograd, _checks


def decimation_pool2d_forward(x, factor):
    fh, fw = factor
    return x[:, :, ::fh, ::fw].contiguous(), (x.shape, factor)


def decimation_pool2d_backward(grad_out, saved, needs=(True,)):
    shape, (fh, fw) = saved
    grad_x = grad_out.new_zeros(shape)
    grad_x[:, :, ::fh, ::fw] = grad_out
    return (grad_x,)


DecimationPooling2d = _autograd.function("DecimationPooling2d", decimation_pool2d_forward,
                                         decimation_pool2d_backward, 1)


def decimation_pool2d(x: torch.Tensor, factor) -> torch.Tensor:
    """Keep every ``factor``-th row and column, starting with the first (a[m] = z[mM])."""
    _checks.rank(x, 4, "input", "N, C, H, W")
    factor = _checks.pair(factor, "factor")
    _checks.positive(factor, "factor")
    return DecimationPooling2d.apply(x, factor)


def decimation_pool1d(x: torch.Tensor, factor: int) -> torch.Tensor:
    _checks.rank(x, 3, "input", "N, C, T")
    return decimation_pool2d(x.unsqueeze(2), (1, int(factor))).squeeze(2)
