"""The convolution's weight gradient read plane by plane: both operands with the summed index
(the positions) adjacent in memory.

dL/dw[d, c, i, j] = sum_{n, m, n'} dL/dz[n, d, m, n'] a[n, c, m*s + (kh-1-i) - p, n'*s + (kw-1-j) - p]

is, for one tap (i, j), the product of a (D/G maps x positions) tile of the output gradient
with the transpose of a (C/G maps x positions) tile of the input shifted by the tap.  From
contiguous (N, C, H, W) copies both tiles are rows of neighbouring addresses (the input's
shifted by a constant for a stride-1 layer, masked at the frame), i.e. both operands
"K-major": the only way round Hopper's tensor cores read a TF32 operand from shared memory.
A channels-last tensor stores the maps adjacent instead, which is why the tap-ordered
implicit product (``_triton_conv_taps``) is slow at TF32.  Programs: one per (D tile,
C tile, group x tap x part of the batch's positions); a layer with few tiles shares the
positions out (``share_out``, as the tap-ordered kernel does), the partial sums in float32,
added afterwards in a fixed order (deterministic).

Selected by ``_triton_conv.WEIGHT_GRADIENT = "planes"``; not yet timed on a GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_grid import partial_sums, share_out, total

# Tile sizes (D maps x C maps, summed over BLOCK_P positions): a first guess, not tuned.
CONFIG = dict(BLOCK_D=64, BLOCK_C=64, BLOCK_P=32, num_warps=4, num_stages=3)


@triton.jit
def _weight_gradient(g_ptr, x_ptr, dw_ptr, M, CHUNK, H, W, HO, WO, CG, DG, pad_value,
                     sgn, sgd, sxn, sxc, sws, swd, swc, swh, sww,
                     KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
                     FRAME: tl.constexpr, STEPS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_P: tl.constexpr):
    pid_d, pid_c, pid_t = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    part, rest = pid_t % SPLIT, pid_t // SPLIT
    tap, group = rest % (KH * KW), rest // (KH * KW)
    i, j = tap // KW, tap % KW
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # output maps inside the group
    cs = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # input maps inside the group
    d_ok, c_ok = ds < DG, cs < CG
    g_rows = g_ptr + (group * DG + ds).to(tl.int64)[:, None] * sgd
    x_rows = x_ptr + (group * CG + cs).to(tl.int64)[:, None] * sxc
    acc = tl.full((BLOCK_D, BLOCK_C), 0.0, tl.float32)
    plane = HO * WO
    m0 = part * CHUNK  # this program's share of the batch's positions, one flat run
    m_end = tl.minimum(m0 + CHUNK, M)
    # A compile-time trip count (the last part's tail masked): Triton pipelines the loads of a
    # ``for`` loop over ``num_stages`` steps, not those of a ``while`` loop, and its interpreter
    # takes no run-time bound in ``range``.
    for step in range(STEPS):
        ms = m0 + step * BLOCK_P + tl.arange(0, BLOCK_P)
        m_ok = ms < m_end
        n, q = ms // plane, ms % plane
        a = tl.load(g_rows + (n.to(tl.int64) * sgn + q)[None, :], mask=d_ok[:, None] & m_ok[None, :], other=0.0)
        h = (q // WO) * SH + (KH - 1 - i) - PH
        w = (q % WO) * SW + (KW - 1 - j) - PW
        inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        b = tl.load(x_rows + (n.to(tl.int64) * sxn + h * W + w)[None, :],
                    mask=c_ok[:, None] & (m_ok & inside)[None, :], other=0.0)
        if FRAME:  # the frame's value met the kernel in the forward
            b = tl.where((m_ok & ~inside)[None, :], pad_value, b)
        acc = tl.dot(a, tl.trans(b.to(a.dtype)), acc, input_precision=PRECISION)
    out = (dw_ptr + part.to(tl.int64) * sws + (group * DG + ds).to(tl.int64)[:, None] * swd
           + cs[None, :] * swc + i * swh + j * sww)
    tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=d_ok[:, None] & c_ok[None, :])


def weight_gradient(grad_out, x, shape, stride, padding, pad_value, groups, precision, programs: int):
    """dL/dw (shape (D, C/G, kh, kw)) from contiguous copies of the output gradient and the input;
    ``programs``: how many the grid should have to fill the device (the positions are shared out)."""
    (d, cg, kh, kw), (sh, sw), (ph, pw) = shape, stride, padding
    grad_out, x = grad_out.contiguous(), x.contiguous()
    n, _, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    m, dg = n * ho * wo, d // groups
    tiles = triton.cdiv(dg, CONFIG["BLOCK_D"]) * triton.cdiv(cg, CONFIG["BLOCK_C"]) * groups * kh * kw
    split, chunk = share_out(m, tiles, CONFIG["BLOCK_P"], programs)
    out = partial_sums(split, (d, cg, kh, kw), grad_out)
    grid = (triton.cdiv(dg, CONFIG["BLOCK_D"]), triton.cdiv(cg, CONFIG["BLOCK_C"]), groups * kh * kw * split)
    _weight_gradient[grid](grad_out, x, out, m, chunk, h, w, ho, wo, cg, dg, float(pad_value),
                           grad_out.stride(0), grad_out.stride(1), x.stride(0), x.stride(1), *out.stride(),
                           KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, PRECISION=precision, SPLIT=split,
                           FRAME=pad_value != 0, STEPS=chunk // CONFIG["BLOCK_P"], **CONFIG)
    return total(out, grad_out.dtype)
