"""Max pooling of channels-last maps as two Numba loops on the CPU: the lecture's forward
and routing backward.

Forward: each output reads its kh x kw window once and keeps the maximum and which of the
window's positions won (row-major, strictly greater: the first maximum, PyTorch's tie
rule; a NaN wins, the last one, as in PyTorch's CPU kernel).  The winner is stored as
its position's number inside the window (uint8 for windows up to 256 positions), an
eighth of the tensor-op path's int64 flat index.  Backward zeroes the input gradient and
adds each output's gradient at its winner, in output order -- PyTorch's order, so the
sums where windows overlap come out bit for bit the same.

The loops walk the (N, H, W, C) array a channels-last map is in memory; for each output
position the loop over channels runs along contiguous memory.  The tensor-op path
(``pool.MaxPooling2d``) takes about fifteen whole-tensor passes over such a map, each a
trip through memory (2.2-3.6x PyTorch's time here); on contiguous maps its passes run along rows
and keep up with PyTorch, so contiguous maps stay there.
"""

from __future__ import annotations

import functools

import numba
import torch
from torch.autograd import Function

from convrepro.compiled import over_slices

from .sizes import output_size


@functools.cache
def _kernels(kh: int, kw: int, sh: int, sw: int):
    """The forward and backward loops for one window and stride, compiled with those as
    constants: the window's loops unroll and the indices fold (pool1 forward + backward
    1.2-1.3x faster than with the sizes as arguments, pool5 1.3-1.7x; compiled once per
    window, stride and dtype, 0.6-1.1 s, and cached on disk beside this file)."""

    @numba.njit(nogil=True, cache=True)
    def forward(x, out, tap, lo, hi):
        ho, wo, channels = out.shape[1], out.shape[2], out.shape[3]
        for n in range(lo, hi):
            for oh in range(ho):
                for ow in range(wo):
                    for c in range(channels):
                        best, won = x[n, oh * sh, ow * sw, c], 0
                        for i in range(kh):
                            for j in range(kw):
                                v = x[n, oh * sh + i, ow * sw + j, c]
                                # No branch: which tap wins is data, and a mispredicted branch
                                # per tap cost more than the window's arithmetic.  max(best, v)
                                # keeps best unless v > best (Python's rule, which Numba keeps),
                                # so ties and signed zeros stay with the first maximum.
                                won += ((v > best) | (v != v)) * (i * kw + j - won)
                                best = max(best, v) if v == v else v
                        out[n, oh, ow, c], tap[n, oh, ow, c] = best, won

    @numba.njit(nogil=True, cache=True)
    def backward(g, tap, gx, lo, hi):
        ho, wo, channels = g.shape[1], g.shape[2], g.shape[3]
        for n in range(lo, hi):
            gx[n] = 0  # each thread zeroes its own slice: the first touch of fresh pages, shared out
            for oh in range(ho):
                for ow in range(wo):
                    for c in range(channels):
                        i, j = divmod(tap[n, oh, ow, c], kw)
                        gx[n, oh * sh + i, ow * sw + j, c] += g[n, oh, ow, c]

    return forward, backward


class NumbaMaxPooling2d(Function):
    """Max pooling of a channels-last (N, C, H, W) tensor; the output and gradient stay so."""

    @staticmethod
    def forward(ctx, x, kernel, stride):
        (kh, kw), (sh, sw) = kernel, stride
        n, c, h, w = x.shape
        ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
        out = torch.empty(n, ho, wo, c, dtype=x.dtype)
        tap = torch.empty(out.shape, dtype=torch.uint8 if kh * kw <= 256 else torch.int32)
        rows = x.detach().permute(0, 2, 3, 1).numpy()  # a view: the map as it lies in memory
        forward, _ = _kernels(kh, kw, sh, sw)
        over_slices(forward, n, out.numel(), rows, out.numpy(), tap.numpy())
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(tap)
        ctx.geometry = (x.shape, kernel, stride)
        return out.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        (tap,) = ctx.saved_tensors
        (n, c, h, w), (kh, kw), (sh, sw) = ctx.geometry
        g = grad_out.permute(0, 2, 3, 1).contiguous()
        grad_x = torch.empty(n, h, w, c, dtype=grad_out.dtype)
        _, backward = _kernels(kh, kw, sh, sw)
        over_slices(backward, n, grad_x.numel(), g.numpy(), tap.numpy(), grad_x.numpy())
        return grad_x.permute(0, 3, 1, 2), None, None
