"""Max pooling as two Triton kernels: the lecture's forward and routing backward, one pass each.

Forward: one program per block of outputs; each output reads its kh x kw window once,
keeps the maximum and the flat (H * W) position of the first maximum in row-major order
(PyTorch's tie rule; a NaN wins, as in PyTorch).  Backward is written as a gather, not a
scatter: each input position visits the few windows that contain it (at most
ceil(kh/sh) x ceil(kw/sw)) and sums the gradients of those it won -- no atomics, so the
result is deterministic, and no address is loaded from memory (Triton's interpreter, which
the tests use, has no indirect loads).

Both kernels walk the positions in the input's own memory order: (n, c, h, w) for a
contiguous input, (n, h, w, c) for a channels-last one (what the convolutions return), so
that neighbouring threads read neighbouring addresses; the output and the gradient keep
that layout.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_grid import split
from .sizes import output_size

BLOCK = 256


@triton.jit
def _position(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    """A flat position in memory order -> (n, c, h, w)."""
    if CHANNELS_LAST:
        pixel, c = offs // C, offs % C
        n, h, w = split(pixel, H, W)
    else:
        plane, h, w = split(offs, H, W)
        n, c = plane // C, plane % C
    return n, c, h, w


@triton.jit
def _forward(x_ptr, out_ptr, win_ptr, total, C, W, HO, WO, sxn, sxc, sxh, sxw,
             KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, oh, ow = _position(offs, C, HO, WO, CHANNELS_LAST)
    base = x_ptr + n.to(tl.int64) * sxn + c.to(tl.int64) * sxc
    top, left = oh * SH, ow * SW
    best = tl.load(base + top * sxh + left * sxw, mask=mask, other=0.0).to(tl.float32)
    winner = top * W + left
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            if i + j > 0:
                v = tl.load(base + (top + i) * sxh + (left + j) * sxw, mask=mask, other=0.0).to(tl.float32)
                # Strictly greater keeps the first maximum; a NaN beats any number, once.
                better = (v > best) | ((v != v) & (best == best))
                best = tl.where(better, v, best)
                winner = tl.where(better, (top + i) * W + left + j, winner)
    tl.store(out_ptr + offs, best.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(win_ptr + offs, winner, mask=mask)


@triton.jit
def _backward(g_ptr, win_ptr, dx_ptr, total, C, H, W, HO, WO, sgn, sgc, sgh, sgw, swn, swc, swh, sww,
              KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
              RH: tl.constexpr, RW: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n, c, h, w = _position(offs, C, H, W, CHANNELS_LAST)
    win_base = win_ptr + n.to(tl.int64) * swn + c.to(tl.int64) * swc
    g_base = g_ptr + n.to(tl.int64) * sgn + c.to(tl.int64) * sgc
    here = h * W + w
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for a in tl.static_range(RH):  # the windows whose rows cover h: oh = h // SH - a
        oh = h // SH - a
        ok_h = (oh >= 0) & (oh < HO) & (h - oh * SH < KH)
        for b in tl.static_range(RW):
            ow = w // SW - b
            ok = mask & ok_h & (ow >= 0) & (ow < WO) & (w - ow * SW < KW)
            won = tl.load(win_base + oh * swh + ow * sww, mask=ok, other=-1)
            g = tl.load(g_base + oh * sgh + ow * sgw, mask=ok & (won == here), other=0.0)
            acc += g.to(tl.float32)
    tl.store(dx_ptr + offs, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def triton_pool_forward(x, kernel, stride):
    """(out, saved): one kernel reads each window once, keeps its maximum and winner."""
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
    layout = _layout(x)
    out = torch.empty(n, c, ho, wo, dtype=x.dtype, device=x.device, memory_format=layout)
    winner = torch.empty(n, c, ho, wo, dtype=torch.int32, device=x.device, memory_format=layout)
    total = out.numel()
    if total:
        _forward[(triton.cdiv(total, BLOCK),)](x, out, winner, total, c, w, ho, wo, *x.stride(),
                                               KH=kh, KW=kw, SH=sh, SW=sw,
                                               CHANNELS_LAST=layout == torch.channels_last, BLOCK=BLOCK)
    return out, (winner, (x.shape, kernel, stride, layout))


def triton_pool_backward(grad_out, saved):
    """dL/dz: each input position gathers the gradients of the windows it won."""
    winner, ((n, c, h, w), (kh, kw), (sh, sw), layout) = saved
    ho, wo = winner.shape[-2:]
    grad_x = torch.empty(n, c, h, w, dtype=grad_out.dtype, device=grad_out.device, memory_format=layout)
    total = grad_x.numel()
    if total:
        _backward[(triton.cdiv(total, BLOCK),)](
            grad_out, winner, grad_x, total, c, h, w, ho, wo, *grad_out.stride(), *winner.stride(),
            KH=kh, KW=kw, SH=sh, SW=sw, RH=-(-kh // sh), RW=-(-kw // sw),
            CHANNELS_LAST=layout == torch.channels_last, BLOCK=BLOCK)
    return grad_x


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last when the input is stored so (and is not also contiguous), else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
