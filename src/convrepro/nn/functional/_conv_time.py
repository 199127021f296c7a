"""The time-delay convolution (1-D, one group): the TDNN's layers, trained one token at a time.

A TDNN layer on one token is a few hundred multiply-adds (16 coefficients x 3 frames x 8
units), so its cost is the number of tensor operations and of Python lines around them.
This path keeps both to the minimum: the input stays in its own (N, C, T) layout, the
receptive fields are read by one ``take`` with a cached index (kernel flip and
frame included), and the columns are laid out transposed, (N, C*K, T_out), so that

    z = w.view(D, C*K) @ columns + bias        (one ``baddbmm``)

comes out directly as (N, D, T_out): no permute, no copy, no height-one 2-D detour.
Backward is the same correlations as the 2-D paths: the input gradient sends dL/dz back
through the kernel (one matrix product) and sums the shifted copies on each input frame
(``_columns.overlap_add``: one accumulating ``put_`` with the *same* index, or for a batch a
gather with it turned around); the weight gradient is dL/dz times the columns.
"""

from __future__ import annotations

import functools

import torch
from torch.autograd import Function

from ._amp import accumulator
from ._columns import overlap_add, readers


@functools.lru_cache(maxsize=64)
def time_index(n: int, c: int, t: int, k: int, stride: int, pad: int, device: torch.device) -> torch.Tensor:
    """Positions in the flat (N, C, T) input, shaped (N, C*K, T_out) -- (C*K, T_out) for one
    pattern; the frame (pad value) is slot N*C*T.  Column (c, j) reads frame
    t*stride + (K-1-j) - pad: tap j of the kernel meets the input K-1-j frames later (the
    convolution's flip)."""
    t_out = (t + 2 * pad - k) // stride + 1
    a = functools.partial(torch.arange, device=device)
    b, ch, j, to = a(n).view(-1, 1, 1, 1), a(c).view(1, -1, 1, 1), a(k).view(1, 1, -1, 1), a(t_out).view(1, 1, 1, -1)
    frame = to * stride + (k - 1 - j) - pad
    flat = (b * c + ch) * t + frame
    index = torch.where((frame >= 0) & (frame < t), flat, n * c * t)
    return index.view(c * k, t_out) if n == 1 else index.view(n, c * k, t_out)


@functools.lru_cache(maxsize=64)
def time_readers(n: int, c: int, t: int, k: int, stride: int, pad: int, device: torch.device) -> torch.Tensor:
    """``time_index`` turned around: for each input frame of each map, the column entries that read it."""
    return readers(time_index(n, c, t, k, stride, pad, device), n * c * t)


class TimeDelayConvolution(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, pad_value):
        n, c, t = x.shape
        d, _, k = weight.shape
        index = time_index(n, c, t, k, stride, padding, x.device)
        # ``take`` reads the flat input in any memory layout and returns the index's shape.
        cols = torch.take(torch.cat([x.reshape(-1), x.new_full((1,), pad_value)]) if padding else x, index)
        kernel = weight.view(d, c * k)
        # One bias per map (D,) or per unit (D, T_out), added inside the product.
        per = None if bias is None else bias.view(d, 1) if bias.dim() == 1 else bias
        if n == 1:  # on-line learning: a plain matrix product, no batch dimension to broadcast
            out = (torch.mm(kernel, cols) if per is None else torch.addmm(per, kernel, cols)).view(1, d, -1)
        elif per is None:
            out = torch.matmul(kernel, cols)
        else:
            out = torch.baddbmm(per, kernel.expand(n, d, c * k), cols)
        ctx.save_for_backward(cols if ctx.needs_input_grad[1] else None,
                              kernel if ctx.needs_input_grad[0] else None, index)
        ctx.geometry = (x.shape, k, stride, padding, bias is not None and bias.dim())
        return out

    @staticmethod
    def backward(ctx, grad_out):
        cols, kernel, index = ctx.saved_tensors
        shape, k, stride, padding, bias_dim = ctx.geometry
        n, c, t = shape
        grad_x = grad_w = grad_b = None
        if n == 1:
            grad_out = grad_out[0]
        if ctx.needs_input_grad[0]:
            # Correlation with the kernel: dL/dz back through each receptive field (C*K, T_out),
            # then what lands on each input frame is summed (the transpose of ``take``); the
            # frame's share is dropped.
            dcols = torch.mm(kernel.t(), grad_out) if n == 1 else torch.matmul(kernel.t(), grad_out)
            acc = accumulator(grad_out.dtype)
            if acc != grad_out.dtype:
                dcols = dcols.to(acc)
            grad_x = overlap_add(dcols, index, shape,
                                 lambda: time_readers(n, c, t, k, stride, padding, index.device),
                                 framed=padding > 0)
            if acc != grad_out.dtype:
                grad_x = grad_x.to(grad_out.dtype)
        if ctx.needs_input_grad[1]:
            # Correlation of dL/dz with the input, summed over the batch: (D, C*K).
            if n == 1:
                grad_w = torch.mm(grad_out, cols.t())
            else:
                grad_w = torch.bmm(grad_out, cols.transpose(1, 2)).sum(0)
            grad_w = grad_w.view(grad_w.shape[0], c, -1)
        if ctx.needs_input_grad[2]:
            if n == 1:
                grad_b = grad_out.sum(1) if bias_dim == 1 else grad_out
            else:
                grad_b = grad_out.sum(dim=(0, 2)) if bias_dim == 1 else grad_out.sum(dim=0)
        return grad_x, grad_w, grad_b, None, None, None
