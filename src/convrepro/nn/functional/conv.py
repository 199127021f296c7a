"""The lecture's convolution with its backward written out.

Forward is a **convolution** (lecture 9, "How to achieve shift invariance"):

    z[d, m, n] = sum_c sum_m' sum_n' w[d, c, m - m', n - n'] a[c, m', n']

so the kernel is flipped relative to PyTorch's cross-correlation: ``conv2d(x, w)`` equals
PyTorch's own conv2d applied with ``w.flip(-2, -1)`` (the tests check exactly that).
Backward is written out, not left to autograd (slides "Backprop of Convolution is
Correlation"):

* input gradient  = correlation of the output gradient with the kernel,
  dL/da[c, m', n'] = sum_d sum_m sum_n w[d, c, m - m', n - n'] dL/dz[d, m, n];
* weight gradient = correlation of the output gradient with the input,
  dL/dw[d, c, m', n'] = sum_m sum_n dL/dz[d, m, n] a[c, m - m', n - n'].

Both are evaluated as matrix products over receptive fields ("columns").  The pair
``conv2d_forward(x, weight, bias, stride, padding, pad_value, groups) -> (z, saved)`` /
``conv2d_backward(dL/dz, saved, needs) -> (dL/da, dL/dw, dL/db)`` picks one of two CPU
strategies, whose costs differ: ``_conv_small`` (one gather, one product and one
scatter-add with a cached index, for the 1989 networks, whose cost is the number of
operations) and
``_conv_large`` (strided copies and one GEMM per group, for AlexNet, whose cost is memory
traffic and arithmetic); on CUDA with Triton, ``_triton_conv`` (forward and both gradients
as kernels that build the columns tile by tile and never store them; see ``_triton``).
A time-delay layer (``conv1d_*``) is the same convolution on a height-one image.

``conv2d`` / ``conv1d`` check their arguments and run the pair under autograd
(``Convolution2d``, ``Convolution1d``); the on-line steps of ``convrepro.training`` call
the pairs themselves.
"""

from __future__ import annotations

import math
import os

import torch

from . import _amp, _autograd, _checks, _triton
from ._conv_large import large_backward, large_forward
from ._conv_small import SMALL_COLUMNS, small_backward, small_forward
from .sizes import output_size


def strategy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int, out_size) -> str:
    """"small", "large" or "triton": which implementation convolves ``x`` with ``weight``."""
    if _triton.wanted(x, "conv") and x.dtype != torch.float64 and (bias is None or bias.dim() == 1):
        return "triton"
    if x.device.type != "cpu":  # the small path's scatter-add is not deterministic there
        return "large"
    n_cols = x.shape[0] * math.prod(out_size) * (weight.numel() // weight.shape[0]) * groups
    return "small" if n_cols < SMALL_COLUMNS else "large"


_KINDS: dict[tuple, str] = {}


def _kind(x, weight, bias, stride, padding, groups) -> str:
    """``strategy`` for this geometry, decided once per process (an on-line step asks ~10^5 times)."""
    key = (x.shape, weight.shape, stride, padding, groups, None if bias is None else bias.dim(), x.device, x.dtype,
           SMALL_COLUMNS, os.environ.get("CONVREPRO_TRITON"))
    kind = _KINDS.get(key)
    if kind is None:
        out_size = [output_size(*a) for a in zip(x.shape[2:], weight.shape[2:], stride[-x.dim() + 2:],
                                                 padding[-x.dim() + 2:], strict=True)]
        kind = _KINDS[key] = strategy(x, weight, bias, groups, out_size)
    return kind


PAIRS = {"small": (small_forward, small_backward), "large": (large_forward, large_backward)}


def _pair(kind: str):
    if kind == "triton" and kind not in PAIRS:  # imported where a kernel runs: Triton is optional
        from ._triton_conv import triton_backward, triton_forward

        PAIRS["triton"] = (triton_forward, triton_backward)
    return PAIRS[kind]


def conv2d_forward(x, weight, bias, stride=(1, 1), padding=(0, 0), pad_value=0.0, groups=1):
    """z = w * a + b (the lecture's convolution) for ``x`` (N, C, H, W) and ``weight``
    (D, C/groups, kh, kw); ``stride`` and ``padding`` are pairs.  Returns (z, saved)."""
    kind = _kind(x, weight, bias, stride, padding, groups)
    out, saved = _pair(kind)[0](x, weight, bias, stride, padding, pad_value, groups)
    return out, (kind, *saved)


def conv2d_backward(grad_out, saved, needs=(True, True, True)):
    """(dL/da, dL/dw, dL/db): the correlations of dL/dz with the kernel and with the input
    (None where ``needs`` says a gradient is not wanted, and for an absent bias)."""
    return _pair(saved[0])[1](grad_out, saved[1:], needs)


def conv1d_forward(x, weight, bias, stride=1, padding=0, pad_value=0.0, groups=1):
    """The time-delay layer: ``x`` (N, C, T), ``weight`` (D, C/groups, K), bias (D,) or (D, T_out).
    The small strategy reads it as it is; the others see a height-one image."""
    stride, padding = (1, stride), (0, padding)
    if _kind(x, weight, bias, stride, padding, groups) == "small":
        out, saved = small_forward(x, weight, bias, stride, padding, pad_value, groups)
        return out, ("small", *saved)
    if bias is not None and bias.dim() == 2:
        bias = bias.unsqueeze(1)
    out, saved = conv2d_forward(x.unsqueeze(2), weight.unsqueeze(2), bias, stride, padding, pad_value, groups)
    return out.squeeze(2), ("height-one", *saved)


def conv1d_backward(grad_out, saved, needs=(True, True, True)):
    if saved[0] == "small":
        return small_backward(grad_out, saved[1:], needs)
    grad_x, grad_w, grad_b = conv2d_backward(grad_out.unsqueeze(2), saved[1:], needs)
    return (None if grad_x is None else grad_x.squeeze(2), None if grad_w is None else grad_w.squeeze(2),
            grad_b if grad_b is None or grad_b.dim() == 1 else grad_b.squeeze(1))


Convolution2d = _autograd.function("Convolution2d", conv2d_forward, conv2d_backward, 3)
Convolution1d = _autograd.function("Convolution1d", conv1d_forward, conv1d_backward, 3)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride=1, padding=0,
           pad_value: float = 0.0, groups: int = 1) -> torch.Tensor:
    """2-D convolution (kernel flipped, as in the lecture) of ``x`` (N, C, H, W), under autograd.

    ``weight`` is (D, C / groups, kh, kw).  ``bias`` is one per output map, (D,), or one
    per output unit, (D, H_out, W_out) as in LeCun et al. 1989.  ``padding`` frames the
    input with ``pad_value`` (LeCun frames with -1, the background grey level).
    """
    stride, padding = _checks.pair(stride, "stride"), _checks.pair(padding, "padding")
    _check(x, weight, bias, stride, padding, groups, "N, C, H, W", "D, C/groups, kh, kw")
    return _apply(Convolution2d, x, weight, bias, stride, padding, float(pad_value), groups)


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, stride: int = 1,
           padding: int = 0, pad_value: float = 0.0, groups: int = 1) -> torch.Tensor:
    """1-D convolution over time of ``x`` (N, C, T): the TDNN's time-delay layer.
    ``bias`` is (D,) or, one per output unit, (D, T_out)."""
    stride, padding = int(stride), int(padding)
    _check(x, weight, bias, (stride,), (padding,), groups, "N, C, T", "D, C/groups, K")
    return _apply(Convolution1d, x, weight, bias, stride, padding, float(pad_value), groups)


def _apply(function, x, weight, bias, *geometry):
    low = _amp.autocast_dtype(x)
    if low is None:
        return function.apply(x, weight, bias, *geometry)
    # Under autocast: the whole convolution in the lower precision, as cuDNN's (see _amp).
    x, weight = x.to(low), weight.to(low)
    bias = None if bias is None else bias.to(low)
    with _amp.no_autocast(x):
        return function.apply(x, weight, bias, *geometry)


def _check(x, weight, bias, stride, padding, groups, input_layout, weight_layout) -> None:
    """One line naming what is wrong, before any index error deep inside a strategy."""
    dims = len(stride) + 2
    _checks.rank(x, dims, "input", input_layout)
    _checks.rank(weight, dims, "weight", weight_layout)
    _checks.positive(stride, "stride")
    _checks.non_negative(padding, "padding")
    channels, (d, cg) = x.shape[1], weight.shape[:2]
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    if channels % groups or d % groups:
        raise ValueError(f"groups={groups} must divide both the input channels ({channels}) and the output maps ({d})")
    if cg * groups != channels:
        raise ValueError(f"weight {tuple(weight.shape)} expects {cg * groups} input channels with groups={groups}, "
                         f"but the input has {channels}")
    padded = tuple(s + 2 * p for s, p in zip(x.shape[2:], padding, strict=True))
    _checks.window_fits(padded, tuple(weight.shape[2:]), "padded input", "kernel")
    per_map = (d,)
    per_unit = (d, *(output_size(p, k, s) for p, k, s in zip(padded, weight.shape[2:], stride, strict=True)))
    if bias is not None and tuple(bias.shape) not in (per_map, per_unit):
        raise ValueError(f"bias must be one per output map {per_map} or one per output unit {per_unit}, "
                         f"got {tuple(bias.shape)}")
