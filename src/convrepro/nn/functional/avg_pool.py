"""Average pooling (lecture 9, "Other types of pooling"): the forward takes each window's
mean, the backward spreads each gradient evenly over its window.

    a[m, n] = (1 / (kh kw)) sum_{(i, j) in window(m, n)} z[i, j]
    dL/dz[i, j] = sum_{windows (m, n) holding (i, j)} dL/da[m, n] / (kh kw)
"""

from __future__ import annotations

import torch

from . import _autograd
from ._amp import accumulator
from ._checks import pool_args, time_kernel
from .sizes import output_size


def _windows(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, Ho, Wo, kh, kw) view of every pooling window, no copy."""
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
    s_n, s_c, s_h, s_w = x.stride()
    return x.as_strided((n, c, ho, wo, kh, kw), (s_n, s_c, sh * s_h, sw * s_w, s_h, s_w))


def avg_pool2d_forward(x, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    return _windows(x, kh, kw, sh, sw).mean(dim=(-2, -1)), (x.shape, kernel, stride)


def avg_pool2d_backward(grad_out, saved, needs=(True,)):
    (n, c, h, w), (kh, kw), (sh, sw) = saved
    ho, wo = grad_out.shape[-2:]
    share = grad_out.to(accumulator(grad_out.dtype)) / (kh * kw)
    grad_x = share.new_zeros(n, c, h, w)
    if (kh, kw) == (sh, sw):  # windows tile the input: one strided write per window
        grad_x[:, :, : ho * kh, : wo * kw] = (
            share[:, :, :, None, :, None].expand(n, c, ho, kh, wo, kw).reshape(n, c, ho * kh, wo * kw)
        )
    else:  # overlapping windows: each offset of the window adds its share
        for i in range(kh):
            for j in range(kw):
                grad_x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += share
    return (grad_x.to(grad_out.dtype),)


AveragePooling2d = _autograd.function("AveragePooling2d", avg_pool2d_forward, avg_pool2d_backward, 1)


def avg_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    kernel, stride = pool_args(x, kernel_size, stride, 4, "average pooling")
    return AveragePooling2d.apply(x, kernel, stride)


def avg_pool1d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    kernel, stride = time_kernel(x, kernel_size, stride)
    return avg_pool2d(x.unsqueeze(2), kernel, stride).squeeze(2)
