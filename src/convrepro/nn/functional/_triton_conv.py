"""The convolution's forward as one Triton kernel: an implicit matrix product, no columns in memory.

z[n, d, m, n'] = sum_{c, i, j} w[d, c, i, j] a[n, c, m*s + (kh-1-i) - p, n'*s + (kw-1-j) - p]

is a product of the (N*Ho*Wo, Cg*kh*kw) receptive-field matrix with the (Cg*kh*kw, D/G)
kernel matrix, as in the tensor-op paths; here each program builds its tile of receptive
fields straight from the input (kernel flip, frame value and group offset in the address
arithmetic) and multiplies it on the tensor cores, so the columns -- 224 MB for AlexNet's
conv2 at batch 32 -- are never written.  Backward is the tensor-op path's (``_conv_large``):
correlations by matrix products over columns rebuilt from the input.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd import Function

from ._conv_large import _kernel_matrix, _padded_channels_last, large_backward
from .sizes import output_size

BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


@triton.jit
def _forward(x_ptr, w_ptr, b_ptr, out_ptr, M, H, W, HO, WO, CG, DG, pad_value,
             sxn, sxc, sxh, sxw, swd, swc, swh, sww, son, sod, soh, sow,
             KTOT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             PH: tl.constexpr, PW: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output positions (n, oh, ow)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output maps inside the group
    row_ok, col_ok = rows < M, cols < DG
    ow = rows % WO
    t = rows // WO
    oh = t % HO
    n = t // HO
    x_row = x_ptr + n.to(tl.int64) * sxn + (group * CG).to(tl.int64) * sxc
    d = group * DG + cols
    w_col = w_ptr + d.to(tl.int64) * swd
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # KTOT is a compile-time constant: a run-time loop bound fails in Triton 3.6's interpreter.
    for k0 in range(0, KTOT, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)  # (c, i, j) of the kernel, row-major
        k_ok = ks < KTOT
        j = ks % KW
        i = (ks // KW) % KH
        c = ks // (KW * KH)
        # The flip: tap (i, j) meets the input at offset (kh-1-i, kw-1-j) of the field.
        h = oh[:, None] * SH + (KH - 1 - i)[None, :] - PH
        w = ow[:, None] * SW + (KW - 1 - j)[None, :] - PW
        valid = row_ok[:, None] & k_ok[None, :]
        inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        a = tl.load(x_row[:, None] + c[None, :].to(tl.int64) * sxc + h * sxh + w * sxw,
                    mask=valid & inside, other=0.0)
        a = tl.where(valid & ~inside, pad_value, a)  # the frame
        b = tl.load(w_col[None, :] + (c * swc + i * swh + j * sww)[:, None],
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + (n.to(tl.int64) * son + oh * soh + ow * sow)[:, None] + d[None, :].to(tl.int64) * sod
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def _precision(x: torch.Tensor) -> str:
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"  # what cuDNN does with float32 convolutions unless told otherwise
    return "ieee"


class TritonConvolution2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, pad_value, groups):
        n, c, h, w = x.shape
        d, cg, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        # Channels-last, as the tensor-op paths return it (and the next layer reads it).
        out = torch.empty(n, ho, wo, d, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
        m = n * ho * wo
        grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(d // groups, BLOCK_N), groups)
        _forward[grid](x, weight, bias if bias is not None else weight, out, m, h, w, ho, wo, cg, d // groups,
                       float(pad_value), *x.stride(), *weight.stride(), *out.stride(), KTOT=cg * kh * kw,
                       KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, HAS_BIAS=bias is not None,
                       PRECISION=_precision(x), BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None,
                              weight if ctx.needs_input_grad[0] else None)
        ctx.geometry = (x.shape, weight.shape, stride, padding, pad_value, groups, bias is not None and bias.dim())
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        shape, wshape, stride, padding, pad_value, groups, bias_dim = ctx.geometry
        xp = None if x is None else _padded_channels_last(x, *padding, pad_value)
        kmat = None if weight is None else _kernel_matrix(weight, groups)
        grads = large_backward(ctx.needs_input_grad, grad_out, xp, kmat, None,
                               (shape, wshape, stride, padding, groups, bias_dim))
        return (*grads, None, None, None, None)
