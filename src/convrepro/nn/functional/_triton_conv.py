"""The convolution's forward as one Triton kernel: an implicit matrix product, no columns in memory.

z[n, d, m, n'] = sum_{c, i, j} w[d, c, i, j] a[n, c, m*s + (kh-1-i) - p, n'*s + (kw-1-j) - p]

is a product of the (N*Ho*Wo, Cg*kh*kw) receptive-field matrix with the (Cg*kh*kw, D/G)
kernel matrix, as in the tensor-op paths; here each program builds its tile of receptive
fields straight from the input (kernel flip, frame value and group offset in the address
arithmetic) and multiplies it on the tensor cores, so the columns -- 224 MB for AlexNet's
conv2 at batch 32 -- are never written.  Backward is the lecture's two correlations, each
an implicit product of the same kind:

* input gradient  dL/da[c, h, w] = sum_{d, i, j} w[d, c, i, j] dL/dz[d, h + p - (kh-1-i), ...]
  (stride 1; a strided layer -- AlexNet's conv1, whose input is the image -- uses the
  tensor-op path's overlap-add, ``_conv_large``);
* weight gradient dL/dw[d, c, i, j] = sum_{n, m, n'} dL/dz[n, d, m, n'] a[n, c, m*s + (kh-1-i) - p, ...]
  (the frame's pad value included: it met the kernel in the forward).

The summed index runs over (map, tap) pairs.  For a channels-last tensor (what the
convolutions return) the map varies fastest, so that a tile's neighbouring columns are
neighbouring addresses; for a contiguous one the tap does.  The weight gradient's sum over
every output position of the batch is split across programs when the layer has too few
(kernel x map) tiles to fill the GPU -- AlexNet's conv1 has 24 -- and the partial sums,
kept in float32, are added in a fixed order afterwards (deterministic, no atomics).

Loops whose bound is known only at run time are ``while`` loops: Triton 3.6's interpreter
(the tests) cannot take a run-time bound in ``range``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _triton_conv_taps as taps
from ._conv_large import _kernel_matrix, _padded_channels_last, gradients
from ._triton_grid import split
from .sizes import output_size

# Tile sizes and launch shape per kernel (M: positions, N: maps, K: the summed index; the
# weight gradient's tile is D maps x K taps, summed over M): the best of the candidates that
# ``benchmarks/gpu_kernels.py`` timed on an H100 (AlexNet's conv1-conv3, TF32 and bf16).
CONFIGS = {"forward": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3),
           "input_gradient": dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
           "weight_gradient": dict(BLOCK_D=64, BLOCK_K=64, BLOCK_M=64, num_warps=4, num_stages=3)}
# How the weight gradient is summed: "columns" lays the receptive fields out once (im2col, as
# the tensor-op path does) and multiplies them by the output gradient in one GEMM per group;
# "triton" is the implicit product below, which never stores the columns; "auto" picks per
# layer (``_weight_gradient_path``).
WEIGHT_GRADIENT = "auto"
# Maps per group from which the tap-ordered kernels (``_triton_conv_taps``) run: below it a
# tile of maps would be mostly padding (AlexNet's conv1 reads 3).
TAPS_FROM = 16


def programs_wanted(device: torch.device) -> int:
    """Programs that keep every multiprocessor busy (two each); one where none is counted."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1


@triton.jit
def _tap(ks, C, KH: tl.constexpr, KW: tl.constexpr, CHANNELS_FAST: tl.constexpr):
    """A summed index -> (map, kernel row, kernel column)."""
    if CHANNELS_FAST:
        return ks % C, ks // (C * KW), (ks // C) % KW
    return ks // (KW * KH), (ks // KW) % KH, ks % KW


@triton.jit
def _forward(x_ptr, w_ptr, b_ptr, out_ptr, M, H, W, HO, WO, CG, DG, pad_value,
             sxn, sxc, sxh, sxw, swd, swc, swh, sww, son, sod, soh, sow,
             KTOT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             PH: tl.constexpr, PW: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
             CHANNELS_FAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output positions (n, oh, ow)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output maps inside the group
    row_ok, col_ok = rows < M, cols < DG
    n, oh, ow = split(rows, HO, WO)
    x_row = x_ptr + n.to(tl.int64) * sxn + (group * CG).to(tl.int64) * sxc
    d = group * DG + cols
    w_col = w_ptr + d.to(tl.int64) * swd
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, KTOT, BLOCK_K):  # KTOT a compile-time constant (see the module's note)
        ks = k0 + tl.arange(0, BLOCK_K)  # (c, i, j) of the kernel
        k_ok = ks < KTOT
        c, i, j = _tap(ks, CG, KH, KW, CHANNELS_FAST)
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


@triton.jit
def _input_gradient(g_ptr, w_ptr, dx_ptr, M, H, W, HO, WO, CG, DG,
                    sgn, sgd, sgh, sgw, swd, swc, swh, sww, sxn, sxc, sxh, sxw,
                    KTOT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                    PRECISION: tl.constexpr, CHANNELS_FAST: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, group = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input positions (n, h, w)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input maps inside the group
    row_ok, col_ok = rows < M, cols < CG
    n, h, w_ = split(rows, H, W)
    g_row = g_ptr + n.to(tl.int64) * sgn + (group * DG).to(tl.int64) * sgd
    c = group * CG + cols
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, KTOT, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)  # (d, i, j): an output map and a kernel tap
        k_ok = ks < KTOT
        d, i, j = _tap(ks, DG, KH, KW, CHANNELS_FAST)
        oh = h[:, None] + PH - (KH - 1 - i)[None, :]  # the output that read (h, w) through tap (i, j)
        ow = w_[:, None] + PW - (KW - 1 - j)[None, :]
        ok = row_ok[:, None] & k_ok[None, :] & (oh >= 0) & (oh < HO) & (ow >= 0) & (ow < WO)
        a = tl.load(g_row[:, None] + d[None, :].to(tl.int64) * sgd + oh * sgh + ow * sgw, mask=ok, other=0.0)
        b = tl.load(w_ptr + ((group * DG + d).to(tl.int64) * swd + i * swh + j * sww)[:, None]
                    + cols[None, :] * swc, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a.to(b.dtype), b, acc, input_precision=PRECISION)
    out = dx_ptr + (n.to(tl.int64) * sxn + h * sxh + w_ * sxw)[:, None] + c[None, :].to(tl.int64) * sxc
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _weight_gradient(g_ptr, x_ptr, dw_ptr, M, CHUNK, H, W, HO, WO, CG, DG, pad_value,
                     sgn, sgd, sgh, sgw, sxn, sxc, sxh, sxw, sws, swd, swc, swh, sww,
                     KTOT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
                     CHANNELS_FAST: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
                     BLOCK_M: tl.constexpr):
    pid_d, pid_k, pid_g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    group, part = pid_g // SPLIT, pid_g % SPLIT
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # output maps inside the group
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # (c, i, j) of the kernel
    d_ok, k_ok = ds < DG, ks < KTOT
    c, i, j = _tap(ks, CG, KH, KW, CHANNELS_FAST)
    d = group * DG + ds
    x_col = x_ptr + (group * CG + c).to(tl.int64) * sxc
    acc = tl.full((BLOCK_D, BLOCK_K), 0.0, tl.float32)
    m0 = part * CHUNK
    m_end = tl.minimum(m0 + CHUNK, M)
    while m0 < m_end:  # this program's share of the sum over every output position of the batch
        ms = m0 + tl.arange(0, BLOCK_M)
        m_ok = ms < m_end
        n, oh, ow = split(ms, HO, WO)
        a = tl.load(g_ptr + d[:, None].to(tl.int64) * sgd + (n.to(tl.int64) * sgn + oh * sgh + ow * sgw)[None, :],
                    mask=d_ok[:, None] & m_ok[None, :], other=0.0)
        h = oh[:, None] * SH + (KH - 1 - i)[None, :] - PH
        w = ow[:, None] * SW + (KW - 1 - j)[None, :] - PW
        valid = m_ok[:, None] & k_ok[None, :]
        inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
        b = tl.load(x_col[None, :] + n[:, None].to(tl.int64) * sxn + h * sxh + w * sxw, mask=valid & inside, other=0.0)
        b = tl.where(valid & ~inside, pad_value, b)
        acc = tl.dot(a, b.to(a.dtype), acc, input_precision=PRECISION)
        m0 += BLOCK_M
    out = dw_ptr + part.to(tl.int64) * sws + d[:, None].to(tl.int64) * swd + (c * swc + i * swh + j * sww)[None, :]
    tl.store(out, acc.to(dw_ptr.dtype.element_ty), mask=d_ok[:, None] & k_ok[None, :])


def _split(m: int, tiles: int, block_m: int, device: torch.device) -> tuple[int, int]:
    """(parts, positions per part) of the weight gradient's sum, so that the grid fills the GPU."""
    blocks = triton.cdiv(m, block_m)
    split = max(1, min(triton.cdiv(programs_wanted(device), tiles), blocks))
    chunk = triton.cdiv(blocks, split) * block_m
    return triton.cdiv(m, chunk), chunk


def _block_k(count: int, largest: int) -> int:
    """The widest block of maps, down to 16, that divides ``count`` (no padded tail), else ``largest``."""
    block = largest
    while block > 16 and count % block:
        block //= 2
    return block if count % block == 0 else largest


def _maps_last(weight: torch.Tensor) -> torch.Tensor:
    """The kernel stored (D, kh, kw, C/G), still indexed (d, c, i, j): a tap's maps side by side."""
    return weight.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _output_maps_last(weight: torch.Tensor) -> torch.Tensor:
    """The kernel stored (C/G, kh, kw, D), still indexed (d, c, i, j): a tap's output maps side
    by side.  The input gradient sums over output maps, and Hopper's tensor cores read a TF32
    operand from shared memory only with its summed index adjacent (16-bit operands may lie
    either way): from the maps-last kernel the TF32 input gradient took 2.4x as long on an
    H100 (conv2-conv5, batch 128: 1.156/0.594/0.425/0.315 against 0.461/0.247/0.185/0.133 ms);
    in bf16 the two layouts took the same time together (0.615 against 0.621 ms)."""
    return weight.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _forward_of(x, weight, bias, stride, padding, pad_value, groups):
    n, c, h, w = x.shape
    d, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    # Channels-last, as the tensor-op paths return it (and the next layer reads it).
    out = torch.empty(n, ho, wo, d, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    m, dg = n * ho * wo, d // groups
    config = dict(CONFIGS["forward"])
    grid = (triton.cdiv(m, config["BLOCK_M"]), triton.cdiv(dg, config["BLOCK_N"]), groups)
    geometry = dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, HAS_BIAS=bias is not None, PRECISION=_precision(x))
    b = bias if bias is not None else weight
    if cg >= TAPS_FROM:
        w_ = _maps_last(weight)
        config["BLOCK_K"] = _block_k(cg, config["BLOCK_K"])
        taps.forward[grid](x, w_, b, out, m, h, w, ho, wo, float(pad_value), *x.stride(), *w_.stride(),
                           *out.stride(), CG=cg, DG=dg, FRAME=pad_value != 0, **geometry, **config)
    else:
        _forward[grid](x, weight, b, out, m, h, w, ho, wo, cg, dg, float(pad_value), *x.stride(), *weight.stride(),
                       *out.stride(), KTOT=cg * kh * kw, CHANNELS_FAST=_channels_fast(x), **geometry, **config)
    return out


def _input_gradient_of(grad_out, weight, shape, padding, groups, precision):
    n, c, h, w = shape
    d, cg, kh, kw = weight.shape
    (ph, pw), dg = padding, d // groups
    ho, wo = grad_out.shape[-2:]
    grad_x = torch.empty(n, h, w, c, dtype=grad_out.dtype, device=grad_out.device).permute(0, 3, 1, 2)
    m = n * h * w
    config = dict(CONFIGS["input_gradient"])
    grid = (triton.cdiv(m, config["BLOCK_M"]), triton.cdiv(cg, config["BLOCK_N"]), groups)
    geometry = dict(KH=kh, KW=kw, PH=ph, PW=pw, PRECISION=precision)
    if dg >= TAPS_FROM:
        grad_out, w_ = _channels_last(grad_out), _output_maps_last(weight)
        config["BLOCK_K"] = _block_k(dg, config["BLOCK_K"])
        taps.input_gradient[grid](grad_out, w_, grad_x, m, h, w, ho, wo, *grad_out.stride(), *w_.stride(),
                                  *grad_x.stride(), CG=cg, DG=dg, **geometry, **config)
    else:
        _input_gradient[grid](grad_out, weight, grad_x, m, h, w, ho, wo, cg, dg, *grad_out.stride(),
                              *weight.stride(), *grad_x.stride(), KTOT=dg * kh * kw,
                              CHANNELS_FAST=_channels_fast(grad_out), **geometry, **config)
    return grad_x


def _weight_gradient_of(grad_out, x, shape, stride, padding, pad_value, groups, precision):
    (d, cg, kh, kw), (sh, sw), (ph, pw) = shape, stride, padding
    n, _, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    m, dg, ktot = n * ho * wo, d // groups, cg * kh * kw
    config = dict(CONFIGS["weight_gradient"])
    bd, bm = config["BLOCK_D"], config["BLOCK_M"]
    tap_order = cg >= TAPS_FROM
    if tap_order:
        config["BLOCK_K"] = _block_k(cg, config["BLOCK_K"])
        k_tiles = kh * kw * triton.cdiv(cg, config["BLOCK_K"])
    else:
        k_tiles = triton.cdiv(ktot, config["BLOCK_K"])
    tiles = triton.cdiv(dg, bd) * k_tiles * groups
    split, chunk = _split(m, tiles, bm, x.device)
    # One part: straight into the gradient; several: partial sums in float32, added below.
    out = torch.empty(split, d, cg, kh, kw, dtype=grad_out.dtype if split == 1 else torch.float32,
                      device=grad_out.device)
    grid = (triton.cdiv(dg, bd), k_tiles, groups * split)
    geometry = dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, PRECISION=precision, SPLIT=split)
    common = (grad_out, x, out, m, chunk, h, w, ho, wo)
    strides = (*grad_out.stride(), *x.stride(), *out.stride())
    if tap_order:
        taps.weight_gradient[grid](*common, float(pad_value), *strides, CG=cg, DG=dg, FRAME=pad_value != 0,
                                   **geometry, **config)
    else:
        _weight_gradient[grid](*common, cg, dg, float(pad_value), *strides, KTOT=ktot,
                               CHANNELS_FAST=_channels_fast(x), **geometry, **config)
    return out[0] if split == 1 else out.sum(0).to(grad_out.dtype)


def _weight_gradient_by_columns(grad_out, x, shape, stride, padding, pad_value, groups):
    """The tensor-op path's weight gradient: the framed input's columns times the output gradient."""
    xp = _padded_channels_last(x, *padding, pad_value)
    return gradients((False, True, False), grad_out, xp, None,
                          (x.shape, shape, stride, padding, groups, False))[1]


def _weight_gradient_path(x: torch.Tensor, maps_per_group: int) -> str:
    """"triton" for 16-bit operands whose maps per group fill the 64-wide tile of input maps,
    else "columns".  Both operands of this product have the summed index (the positions)
    strided in a channels-last tensor, which TF32 tensor cores do not take from shared
    memory: at TF32 the implicit product took 1.0-2.5x the columns' time on an H100; in bf16
    it took 0.53-0.91x on AlexNet's conv3-conv5 (192-256 maps per group) but 1.37x on conv2,
    whose 48 maps per group leave 16-wide tiles (batch 128, ``benchmarks/gpu_kernels.py --parts``)."""
    if WEIGHT_GRADIENT != "auto":
        return WEIGHT_GRADIENT
    return "triton" if x.element_size() == 2 and maps_per_group % 64 == 0 else "columns"


def _channels_fast(t: torch.Tensor) -> bool:
    """Sum over maps fastest where the maps are adjacent in memory (channels-last)."""
    return t.stride(1) == 1 and t.shape[1] > 1


def _precision(x: torch.Tensor) -> str:
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"  # what cuDNN does with float32 convolutions unless told otherwise
    return "ieee"


def triton_forward(x, weight, bias, stride, padding, pad_value, groups):
    """The convolution on a GPU: one implicit-product kernel, no columns in memory."""
    if weight.shape[1] >= TAPS_FROM:  # a tap's maps side by side (one copy if they are not)
        x = _channels_last(x)
    out = _forward_of(x, weight, bias, stride, padding, pad_value, groups)
    return out, (x, weight, (x.shape, weight.shape, stride, padding, pad_value, groups,
                             0 if bias is None else bias.dim()))


def triton_backward(grad_out, saved, needs):
    """The two correlations as implicit products (a strided layer's input gradient by overlap-add)."""
    x, weight, (shape, (d, cg, kh, kw), stride, padding, pad_value, groups, bias_dim) = saved
    precision = _precision(grad_out)
    grad_x = grad_w = grad_b = None
    if needs[0] and tuple(stride) == (1, 1):
        grad_x = _input_gradient_of(grad_out, weight, shape, padding, groups, precision)
    elif needs[0]:  # a strided layer: the tensor-op path's overlap-add
        grad_x = gradients((True, False, False), grad_out, None, _kernel_matrix(weight, groups),
                           (shape, (d, cg, kh, kw), stride, padding, groups, bias_dim))[0]
    path = _weight_gradient_path(x, cg) if needs[1] else None
    if path == "columns":
        grad_w = _weight_gradient_by_columns(grad_out, x, (d, cg, kh, kw), stride, padding, pad_value, groups)
    elif path == "triton":
        grad_w = _weight_gradient_of(grad_out, x, (d, cg, kh, kw), stride, padding, pad_value, groups, precision)
    if len(needs) > 2 and needs[2] and bias_dim:
        grad_b = grad_out.sum(dim=(0, 2, 3))
    return grad_x, grad_w, grad_b
