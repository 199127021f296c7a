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

Both are evaluated as matrix products over receptive fields ("columns"), in ways that
compute the same sums: ``_conv_time`` (the TDNN's 1-D layers, one token at a time: one
``take`` and one product), ``_conv_small`` (one gather and one scatter-add with a cached
index; for the 1989 networks, whose cost is the number of operations), ``_conv_large``
(strided copies into a reused workspace and one GEMM per group; for AlexNet, whose cost is
memory traffic and arithmetic) and, on CUDA with Triton, ``_triton_conv`` (forward and
both gradients as kernels that build the columns tile by tile and never store them; see
``_triton``).
"""

from __future__ import annotations

import torch

from . import _amp, _checks, _triton
from ._conv_large import LargeConvolution2d
from ._conv_small import SMALL_COLUMNS, SmallConvolution2d
from ._conv_time import TimeDelayConvolution
from .sizes import output_size


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride=1,
    padding=0,
    pad_value: float = 0.0,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution (kernel flipped, as in the lecture) of ``x`` (N, C, H, W).

    ``weight`` is (D, C / groups, kh, kw).  ``bias`` is one per output map, (D,), or one
    per output unit, (D, H_out, W_out) as in LeCun et al. 1989.  ``padding`` frames the
    input with ``pad_value`` (LeCun frames with -1, the background grey level).
    """
    stride, padding = _checks.pair(stride, "stride"), _checks.pair(padding, "padding")
    _checks.rank(x, 4, "input", "N, C, H, W")
    _checks.rank(weight, 4, "weight", "D, C/groups, kh, kw")
    _checks.positive(stride, "stride")
    _checks.non_negative(padding, "padding")
    _check_groups(x.shape[1], weight, groups)
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    _checks.window_fits(padded, tuple(weight.shape[2:]), "padded input", "kernel")
    out_size = tuple(output_size(p, k, s) for p, k, s in zip(padded, weight.shape[2:], stride, strict=True))
    _check_bias(bias, weight.shape[0], out_size)
    n_cols = x.shape[0] * out_size[0] * out_size[1] * weight.shape[1] * groups * weight.shape[2] * weight.shape[3]
    impl = SmallConvolution2d if n_cols < SMALL_COLUMNS else LargeConvolution2d
    if _triton.wanted(x, "conv") and x.dtype != torch.float64 and (bias is None or bias.dim() == 1):
        from ._triton_conv import TritonConvolution2d

        impl = TritonConvolution2d
    return _apply(impl, x, weight, bias, stride, padding, float(pad_value), groups)


def _apply(impl, x, weight, bias, *geometry):
    low = _amp.autocast_dtype(x)
    if low is None:
        return impl.apply(x, weight, bias, *geometry)
    # Under autocast: the whole convolution in the lower precision, as cuDNN's (see _amp).
    x, weight = x.to(low), weight.to(low)
    bias = None if bias is None else bias.to(low)
    with _amp.no_autocast(x):
        return impl.apply(x, weight, bias, *geometry)


def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    pad_value: float = 0.0,
    groups: int = 1,
) -> torch.Tensor:
    """1-D convolution over time of ``x`` (N, C, T): the TDNN's time-delay layer.

    ``bias`` is (D,) or, one per output unit, (D, T_out).  One group runs the time-delay
    path (``_conv_time``, made for on-line learning); grouped or very large ones run the
    2-D Function on a height-one image.
    """
    stride, padding = int(stride), int(padding)
    if groups == 1 and x.dim() == 3 and weight.dim() == 3:
        # On-line learning calls this ~10^5 times: one test of the common case, and the
        # checks that name what is wrong only when it fails.
        n, c, t = x.shape
        d, cw, k = weight.shape
        t_out = (t + 2 * padding - k) // stride + 1 if stride > 0 else 0
        if (cw == c and padding >= 0 and t_out > 0 and n * t * c * k < SMALL_COLUMNS
                and (bias is None or bias.shape in ((d,), (d, t_out)))):
            return _apply(TimeDelayConvolution, x, weight, bias, stride, padding, float(pad_value))
    _checks.rank(x, 3, "input", "N, C, T")
    _checks.rank(weight, 3, "weight", "D, C/groups, K")
    _checks.positive((stride,), "stride")
    _checks.non_negative((padding,), "padding")
    _check_groups(x.shape[1], weight, groups)
    _checks.window_fits((x.shape[2] + 2 * padding,), tuple(weight.shape[2:]), "padded input", "kernel")
    _check_bias(bias, weight.shape[0], (output_size(x.shape[2], weight.shape[2], stride, padding),))
    if bias is not None and bias.dim() == 2:
        bias = bias.unsqueeze(1)
    out = conv2d(  # grouped, very large, or wrong: the 2-D path and its checks
        x.unsqueeze(2), weight.unsqueeze(2), bias,
        stride=(1, stride), padding=(0, padding), pad_value=pad_value, groups=groups,
    )
    return out.squeeze(2)


def _check_groups(channels: int, weight: torch.Tensor, groups: int) -> None:
    d, cg = weight.shape[:2]
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    if channels % groups or d % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({channels}) and the "
            f"output maps ({d})"
        )
    if cg * groups != channels:
        raise ValueError(
            f"weight {tuple(weight.shape)} expects {cg * groups} input channels with "
            f"groups={groups}, but the input has {channels}"
        )


def _check_bias(bias: torch.Tensor | None, d: int, out_size: tuple[int, ...]) -> None:
    if bias is None:
        return
    per_map, per_unit = (d,), (d, *out_size)
    if tuple(bias.shape) not in (per_map, per_unit):
        raise ValueError(
            f"bias must be one per output map {per_map} or one per output unit {per_unit}, "
            f"got {tuple(bias.shape)}"
        )
