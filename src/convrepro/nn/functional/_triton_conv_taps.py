"""The convolution's three implicit products with the kernel tap outermost (``_triton_conv``'s
kernels for layers with many maps per group: AlexNet's conv2-conv5).

The same sums as ``_triton_conv``, ordered for the GPU: for each tap (i, j) of the kernel
the receptive-field row of an output position is one pixel's maps, which a channels-last
tensor stores side by side -- so a tile is a block of pixels times a block of maps, read
with wide contiguous loads, and the pixel's address and its frame test are worked out once
per tap instead of once per element.  The kernel is read as (D, kh, kw, C/G), maps
adjacent, for the same reason (the caller permutes it; it is small).

Map counts and kernel sizes are compile-time constants: Triton specialises the kernels per
layer anyway, and its interpreter (the tests) takes no run-time bound in ``range``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._triton_grid import split


@triton.jit
def forward(x_ptr, w_ptr, b_ptr, out_ptr, M, H, W, HO, WO, pad_value,
            sxn, sxc, sxh, sxw, swd, swc, swh, sww, son, sod, soh, sow,
            CG: tl.constexpr, DG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
            SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, FRAME: tl.constexpr, HAS_BIAS: tl.constexpr,
            PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output positions (n, oh, ow)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output maps inside the group
    row_ok, col_ok = rows < M, cols < DG
    n, oh, ow = split(rows, HO, WO)
    x_row = x_ptr + n.to(tl.int64) * sxn + (group * CG).to(tl.int64) * sxc
    d = group * DG + cols
    w_col = w_ptr + d.to(tl.int64) * swd
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for tap in range(KH * KW):
        i, j = tap // KW, tap % KW
        # The flip: tap (i, j) meets the input at offset (kh-1-i, kw-1-j) of the field.
        h = oh * SH + (KH - 1 - i) - PH
        w = ow * SW + (KW - 1 - j) - PW
        inside = row_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        pixel = x_row + h * sxh + w * sxw
        for c0 in range(0, CG, BLOCK_K):
            c = c0 + tl.arange(0, BLOCK_K)
            c_ok = c < CG
            a = tl.load(pixel[:, None] + c[None, :] * sxc, mask=inside[:, None] & c_ok[None, :], other=0.0)
            if FRAME:  # a frame value other than zero (LeCun's -1)
                a = tl.where((row_ok & ~inside)[:, None] & c_ok[None, :], pad_value, a)
            b = tl.load(w_col[None, :] + (c * swc + i * swh + j * sww)[:, None],
                        mask=c_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + d, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + (n.to(tl.int64) * son + oh * soh + ow * sow)[:, None] + d[None, :].to(tl.int64) * sod
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def input_gradient(g_ptr, w_ptr, dx_ptr, M, H, W, HO, WO,
                   sgn, sgd, sgh, sgw, swd, swc, swh, sww, sxn, sxc, sxh, sxw,
                   CG: tl.constexpr, DG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr,
                   PW: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Stride 1: dL/da[c, h, w] = sum over taps (i, j) and maps d of w[d, c, i, j] dL/dz[d, h + p - (kh-1-i), ...]."""
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input positions (n, h, w)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input maps inside the group
    row_ok, col_ok = rows < M, cols < CG
    n, h, w_ = split(rows, H, W)
    g_row = g_ptr + n.to(tl.int64) * sgn + (group * DG).to(tl.int64) * sgd
    c = group * CG + cols
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for tap in range(KH * KW):
        i, j = tap // KW, tap % KW
        oh = h + PH - (KH - 1 - i)  # the output that read (h, w) through tap (i, j)
        ow = w_ + PW - (KW - 1 - j)
        ok = row_ok & (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO)
        pixel = g_row + oh * sgh + ow * sgw
        for d0 in range(0, DG, BLOCK_K):
            d = d0 + tl.arange(0, BLOCK_K)
            d_ok = d < DG
            a = tl.load(pixel[:, None] + d[None, :] * sgd, mask=ok[:, None] & d_ok[None, :], other=0.0)
            b = tl.load(w_ptr + ((group * DG + d).to(tl.int64) * swd + i * swh + j * sww)[:, None]
                        + cols[None, :] * swc, mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)
    out = dx_ptr + (n.to(tl.int64) * sxn + h * sxh + w_ * sxw)[:, None] + c[None, :].to(tl.int64) * sxc
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def weight_gradient(g_ptr, x_ptr, dw_ptr, M, CHUNK, H, W, HO, WO, pad_value,
                    sgn, sgd, sgh, sgw, sxn, sxc, sxh, sxw, sws, swd, swc, swh, sww,
                    CG: tl.constexpr, DG: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                    SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, FRAME: tl.constexpr,
                    PRECISION: tl.constexpr, SPLIT: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
    """One program: BLOCK_D maps x BLOCK_K input maps of one tap, summed over its share of positions."""
    pid_d, pid_k, pid_g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    group, part = pid_g // SPLIT, pid_g % SPLIT
    tap, block = pid_k // ((CG + BLOCK_K - 1) // BLOCK_K), pid_k % ((CG + BLOCK_K - 1) // BLOCK_K)
    i, j = tap // KW, tap % KW
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # output maps inside the group
    cs = block * BLOCK_K + tl.arange(0, BLOCK_K)  # input maps inside the group
    d_ok, c_ok = ds < DG, cs < CG
    d = group * DG + ds
    x_col = x_ptr + (group * CG + cs).to(tl.int64) * sxc
    acc = tl.full((BLOCK_D, BLOCK_K), 0.0, tl.float32)
    m0 = part * CHUNK
    m_end = tl.minimum(m0 + CHUNK, M)
    while m0 < m_end:  # this program's share of the sum over every output position of the batch
        ms = m0 + tl.arange(0, BLOCK_M)
        m_ok = ms < m_end
        n, oh, ow = split(ms, HO, WO)
        a = tl.load(g_ptr + d[:, None].to(tl.int64) * sgd + (n.to(tl.int64) * sgn + oh * sgh + ow * sgw)[None, :],
                    mask=d_ok[:, None] & m_ok[None, :], other=0.0)
        h = oh * SH + (KH - 1 - i) - PH
        w = ow * SW + (KW - 1 - j) - PW
        inside = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        pixel = n.to(tl.int64) * sxn + h * sxh + w * sxw
        b = tl.load(x_col[None, :] + pixel[:, None], mask=inside[:, None] & c_ok[None, :], other=0.0)
        if FRAME:
            b = tl.where((m_ok & ~inside)[:, None] & c_ok[None, :], pad_value, b)
        acc = tl.dot(a, b.to(a.dtype), acc, input_precision=PRECISION)
        m0 += BLOCK_M
    out = dw_ptr + part.to(tl.int64) * sws + d[:, None].to(tl.int64) * swd + (cs * swc + i * swh + j * sww)[None, :]
    tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=d_ok[:, None] & c_ok[None, :])
