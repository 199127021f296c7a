"""The convolution for large layers (AlexNet): im2col by one strided copy, one GEMM per group,
a few images at a time.

Each of the three sums (output, input gradient, weight gradient) is a matrix product per
group over receptive fields laid out as columns (one row per output position), made for a
block of images at a time (``BLOCK_BYTES``) in one workspace per call: a block stays in the
cache, and the workspace's pages are faulted in once, where the whole batch's columns
(conv2 at batch 32: 224 MB) or fresh columns per block are new pages each time (whole
AlexNet training steps at 128 px batch 64 against torch.nn, ``make bench-ab AGAINST=67886fa``,
four runs: 0.84-0.88 with fresh columns per block, 0.89-0.93 with one workspace per call).
Backward makes each block's columns again from the framed input it saved.  Activations are channels-last (N, H, W, C)
inside: the columns read contiguous channel vectors and the output is a free view."""

from __future__ import annotations

import torch

from ._amp import accumulator
from .sizes import output_size

# The columns (and the input gradient's column gradient) are made in blocks of about this size.
BLOCK_BYTES = 16 << 20


def _padded_channels_last(x: torch.Tensor, ph: int, pw: int, value: float) -> torch.Tensor:
    """(N, C, H, W) in any layout -> contiguous (N, H + 2ph, W + 2pw, C), framed by ``value``."""
    n, c, h, w = x.shape
    if ph == 0 and pw == 0:
        return x.permute(0, 2, 3, 1).contiguous()
    xp = x.new_full((n, h + 2 * ph, w + 2 * pw, c), value)
    xp[:, ph : ph + h, pw : pw + w, :] = x.permute(0, 2, 3, 1)
    return xp


def _columns(xp: torch.Tensor, kh: int, kw: int, sh: int, sw: int, groups: int, work: torch.Tensor) -> torch.Tensor:
    """im2col: (G, N*Ho*Wo, kh*kw*Cg), row r the receptive field of position r, written into
    the front of the flat workspace ``work``."""
    n, hp, wp, c = xp.shape
    ho, wo, cg = output_size(hp, kh, sh), output_size(wp, kw, sw), c // groups
    cols = work[: groups * n * ho * wo * kh * kw * cg].view(groups, n, ho, wo, kh, kw, cg)
    s_n, s_h, s_w, s_c = xp.stride()
    cols.copy_(xp.as_strided((groups, n, ho, wo, kh, kw, cg), (cg * s_c, s_n, sh * s_h, sw * s_w, s_h, s_w, s_c)))
    return cols.view(groups, n * ho * wo, kh * kw * cg)


def _blocks(n: int, per_image: int, like: torch.Tensor):
    """[first, last) ranges of images whose columns take about BLOCK_BYTES (the batch on a GPU),
    and the one workspace (the largest block's columns) every block of the call reuses."""
    step = max(1, BLOCK_BYTES // per_image) if like.device.type == "cpu" else n
    work = like.new_empty(min(n, step) * per_image // like.element_size())
    return [(first, min(n, first + step)) for first in range(0, n, step)], work


def _landing(tap: int, stride: int, pad: int, out: int, size: int) -> tuple[slice, slice]:
    """Which output positions' tap ``tap`` lands inside an input of ``size`` (not on the frame),
    and where: position o reads input o * stride + tap - pad."""
    lo = max(0, -(-(pad - tap) // stride))  # first o with o * stride + tap - pad >= 0
    count = max(0, min(out, (size - 1 + pad - tap) // stride + 1) - lo)  # up to the last o inside
    start = lo * stride + tap - pad
    return slice(lo, lo + count), slice(start, start + stride * (count - 1) + 1 if count else start, stride)


def _kernel_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(D, Cg, kh, kw) -> the flipped kernel as (G, kh*kw*Cg, Dg): the convolution's matrix."""
    d, cg, kh, kw = weight.shape
    flipped = weight.flip(-2, -1).view(groups, d // groups, cg, kh, kw)
    return flipped.permute(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, d // groups)


def large_forward(x, weight, bias, stride, padding, pad_value, groups):
    """z = columns @ flipped kernel + bias, one GEMM per group and block of images."""
    n, c, h, w = x.shape
    d, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = _padded_channels_last(x, ph, pw, pad_value)
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    kmat = _kernel_matrix(weight, groups)
    dg = d // groups
    out = x.new_empty(n, ho, wo, d)  # channels-last: each block's rows, each group's columns, written in place
    rows = out.view(n * ho * wo, d)
    blocks, work = _blocks(n, ho * wo * kh * kw * c * x.element_size(), x)
    per_map = bias is not None and bias.dim() == 1  # one bias per map rides in the product
    for first, last in blocks:
        cols = _columns(xp[first:last], kh, kw, sh, sw, groups, work)
        block = rows[first * ho * wo : last * ho * wo]
        for k in range(groups):
            maps = slice(k * dg, (k + 1) * dg)
            if per_map:
                torch.addmm(bias[maps], cols[k], kmat[k], out=block[:, maps])
            else:
                torch.mm(cols[k], kmat[k], out=block[:, maps])
    if bias is not None and bias.dim() == 3:  # one per unit (LeCun: (D, Ho, Wo)) added after
        out += bias.permute(1, 2, 0)
    out = out.permute(0, 3, 1, 2)
    geometry = (x.shape, weight.shape, stride, padding, groups, 0 if bias is None else bias.dim())
    return out, (xp, kmat, geometry)


def large_backward(grad_out, saved, needs):
    """(dL/dx, dL/dw, dL/db) of ``large_forward``."""
    xp, kmat, geometry = saved
    return gradients(needs, grad_out, xp, kmat, geometry)


def gradients(needs, grad_out, xp, kmat, geometry):
    """(dL/dx, dL/dw, dL/db) from the framed channels-last input ``xp`` (for dL/dw) and the
    kernel matrix (for dL/dx), block by block of images."""
    (n, c, h, w), (d, cg, kh, kw), (sh, sw), (ph, pw), groups, bias_dim = geometry
    ho, wo = grad_out.shape[-2:]
    dg = d // groups
    # (G, M, Dg): the output gradient, one row per output position, each group's rows
    # contiguous (a channels-last gradient interleaves the groups: one copy separates them).
    g = grad_out.permute(0, 2, 3, 1).reshape(n * ho * wo, groups, dg).transpose(0, 1)
    if groups > 1:
        g = g.contiguous()
    grad_x = grad_w = grad_b = None
    acc = accumulator(grad_out.dtype)
    if needs[0]:
        grad_x = grad_out.new_zeros(n, h, w, c, dtype=acc)  # (N, H, W, C): returned as an (N, C, H, W) view
        taps = [(i, j, _landing(i, sh, ph, ho, h), _landing(j, sw, pw, wo, w)) for i in range(kh) for j in range(kw)]
    if needs[1]:
        dk = torch.zeros(groups, dg, kh * kw * cg, dtype=acc, device=grad_out.device)  # blocks summed in float32
    blocks, work = _blocks(n, ho * wo * kh * kw * c * grad_out.element_size(), grad_out)
    for first, last in blocks:
        rows = slice(first * ho * wo, last * ho * wo)
        if needs[1]:
            # Correlation of the output gradient with the input: dL/dw of the flipped kernel.
            cols = _columns(xp[first:last], kh, kw, sh, sw, groups, work)
            for k in range(groups):
                dk[k] += torch.mm(g[k, rows].t(), cols[k])
        if needs[0]:
            # Correlation of the output gradient with the kernel: every output position sends
            # dL/dz back through the kernel (a row of kh*kw*Cg values), then the kh*kw shifted
            # copies are summed, each tap adding only the positions that land inside the input
            # (the frame is a constant: its gradient is dropped).  Channels-last, so each add
            # moves whole runs of a group's Cg channels.
            for k in range(groups):
                block = torch.mm(g[k, rows], kmat[k].t(), out=work[: (last - first) * ho * wo * kh * kw * cg].view(
                    -1, kh * kw * cg)).view(last - first, ho, wo, kh, kw, cg)
                into = grad_x[first:last, :, :, k * cg : (k + 1) * cg]
                for i, j, (r, ys), (q, xs) in taps:
                    # add_, not +=: Python's += on a slice also assigns it back (a copy_ call each)
                    into[:, ys, xs].add_(block[:, r, q, i, j])
    if needs[0]:
        grad_x = grad_x.permute(0, 3, 1, 2).to(grad_out.dtype)
    if needs[1]:
        # Flipping back gives the gradient of the convolution kernel.
        grad_w = dk.view(groups, dg, kh, kw, cg).permute(0, 1, 4, 2, 3).reshape(d, cg, kh, kw)
        grad_w = grad_w.flip(-2, -1).to(grad_out.dtype)
    if len(needs) > 2 and needs[2] and bias_dim:
        grad_b = grad_out.sum(dim=(0, 2, 3)) if bias_dim == 1 else grad_out.sum(0)
    return grad_x, grad_w, grad_b
