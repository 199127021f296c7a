"""The convolution for large layers (AlexNet): im2col by strided copies, one GEMM per group.

The input is laid out once as columns (one row per output position), so that each of the
three sums (output, input gradient, weight gradient) is one matrix product per group over
the whole batch (``_gemm``: oneDNN's on a CPU); the input gradient's sum over kernel shifts
is an overlap-add, one strided add per kernel offset, made a few images at a time on a
CPU.  Activations are kept channels-last (N, H, W, C) inside: the column gather then reads
contiguous channel vectors and the output is a free view."""

from __future__ import annotations

import threading

import torch

from ._amp import accumulator
from ._columns import bias_gradient, output_from_columns
from ._gemm import matmul
from .sizes import output_size

_SCRATCH = threading.local()

# The input gradient's column gradient is made in blocks of about this size (a few images).
BLOCK_BYTES = 16 << 20


def _workspace(slot, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor reused across calls (per thread, slot, device and dtype).

    The column matrices are large (AlexNet conv2 at batch 32: 224 MB); allocating them
    fresh each time costs more in page faults than the copy itself.  Only temporaries
    that never leave a Function use this.
    """
    key = (slot, like.device, like.dtype)
    cache = _SCRATCH.__dict__.setdefault("buffers", {})
    numel = 1
    for n in shape:
        numel *= n
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        # A normal tensor even when first asked for under torch.inference_mode (Lightning's
        # evaluation): an inference tensor could not be written by a later training step.
        with torch.inference_mode(False):
            buf = torch.empty(numel, device=like.device, dtype=like.dtype)
        cache[key] = buf
    return buf[:numel].view(shape)


def _padded_channels_last(x: torch.Tensor, ph: int, pw: int, value: float, reuse: bool = False) -> torch.Tensor:
    """(N, C, H, W) in any layout -> contiguous (N, H + 2ph, W + 2pw, C), framed by ``value``;
    with ``reuse``, in a workspace (only the forward's columns read it)."""
    n, c, h, w = x.shape
    if ph == 0 and pw == 0:
        return x.permute(0, 2, 3, 1).contiguous()
    shape = (n, h + 2 * ph, w + 2 * pw, c)
    if not reuse:
        xp = x.new_full(shape, value)
    else:  # the interior is overwritten below: only the frame's four strips are set
        xp = _workspace(("padded", *shape), shape, x)
        xp[:, :ph], xp[:, ph + h :] = value, value
        xp[:, ph : ph + h, :pw], xp[:, ph : ph + h, pw + w :] = value, value
    xp[:, ph : ph + h, pw : pw + w, :] = x.permute(0, 2, 3, 1)
    return xp


def _columns(xp: torch.Tensor, kh: int, kw: int, sh: int, sw: int, groups: int) -> torch.Tensor:
    """im2col into a workspace: (G, N*Ho*Wo, kh*kw*Cg), row r the receptive field of position r."""
    n, hp, wp, c = xp.shape
    ho, wo, cg = output_size(hp, kh, sh), output_size(wp, kw, sw), c // groups
    # One workspace per column shape, so that a layer's columns usually survive until its
    # backward (which checks, by the buffer's version counter, that nobody overwrote them).
    cols = _workspace(("columns", groups, n, ho, wo, kh, kw, cg), (groups, n, ho, wo, kh, kw, cg), xp)
    if cg < 16:  # few channels (an image's RGB): one copy from a 7-D strided view wins
        s_n, s_h, s_w, s_c = xp.stride()
        cols.copy_(xp.as_strided((groups, n, ho, wo, kh, kw, cg),
                                 (cg * s_c, s_n, sh * s_h, sw * s_w, s_h, s_w, s_c)))
    else:  # many channels: one copy per kernel offset, each moving whole channel vectors
        src = xp.view(n, hp, wp, groups, cg).permute(3, 0, 1, 2, 4)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, :, i, j, :] = src[:, :, i : i + sh * (ho - 1) + 1 : sh,
                                                j : j + sw * (wo - 1) + 1 : sw, :]
    return cols.view(groups, n * ho * wo, kh * kw * cg)


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


class _Reused:
    """The forward's columns, left in their workspace: backward takes them if no later layer
    of the same shape has written there since (same version counter), else rebuilds them."""

    def __init__(self, cols: torch.Tensor):
        self.cols, self.version = cols, cols._version

    def get(self) -> torch.Tensor | None:
        return self.cols if self.cols._version == self.version else None


def large_forward(x, weight, bias, stride, padding, pad_value, groups):
    """z = columns @ flipped kernel + bias, one GEMM per group over the whole batch."""
    n, c, h, w = x.shape
    d, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = _padded_channels_last(x, ph, pw, pad_value, reuse=True)
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    cols = _columns(xp, kh, kw, sh, sw, groups)
    kmat = _kernel_matrix(weight, groups)
    out = output_from_columns(cols, kmat, bias, n, ho, wo)
    geometry = (x.shape, weight.shape, stride, padding, groups, 0 if bias is None else bias.dim())
    return out, (x, kmat, _Reused(cols), geometry, pad_value)


def large_backward(grad_out, saved, needs):
    """(dL/dx, dL/dw, dL/db) of ``large_forward``."""
    x, kmat, reused, geometry, pad_value = saved
    cols = reused.get() if needs[1] else None
    xp = _padded_channels_last(x, *geometry[3], pad_value) if needs[1] and cols is None else None
    return gradients(needs, grad_out, xp, kmat, cols, geometry)


def gradients(needs_input_grad, grad_out, xp, kmat, cols, geometry):
    """(dL/dx, dL/dw, dL/db) from the padded channels-last input ``xp``, the kernel matrix and
    the forward's columns (rebuilt from ``xp`` when None)."""
    (n, c, h, w), (d, cg, kh, kw), (sh, sw), (ph, pw), groups, bias_dim = geometry
    ho, wo = grad_out.shape[-2:]
    dg = d // groups
    # (G, M, Dg): the output gradient, one row per output position, each group's rows
    # contiguous (a channels-last gradient interleaves the groups: one copy separates them,
    # on a CPU into a workspace -- conv2 136 against 140 ms with fresh pages each time).
    g = grad_out.permute(0, 2, 3, 1).reshape(n * ho * wo, groups, dg).transpose(0, 1)
    if groups > 1 and grad_out.device.type == "cpu":
        g = _workspace(("gradient_rows", *g.shape), tuple(g.shape), grad_out).copy_(g)
    elif groups > 1:
        g = g.contiguous()
    grad_x = grad_w = grad_b = None
    if needs_input_grad[0]:
        # Correlation of the output gradient with the kernel: every output position sends
        # dL/dz back through the kernel (one GEMM: a row of kh*kw*Cg values per position),
        # then the kh*kw shifted copies are summed.  Both are channels-last, so each shifted
        # add moves whole runs of a group's Cg channels: with (Ho, Wo) planes instead, conv3-5's
        # adds ran along 13-wide rows (their input gradients 27.1 / 28.2 / 19.6
        # against 23.9 / 22.0 / 16.0 ms).
        #
        # On a CPU it is made a few images at a time and summed at once: a block that stays
        # in the cache, in memory the allocator hands back each time, where the whole
        # batch's (conv2 at batch 32: 224 MB) took a page fault per 4 KB.  The sums go
        # straight into the gradient, each tap adding only the positions that land inside
        # the input (the frame is a constant: its gradient is dropped).

        acc = accumulator(grad_out.dtype)
        grad_x = grad_out.new_zeros(n, h, w, c, dtype=acc)  # (N, H, W, C): returned as an (N, C, H, W) view
        taps = [(i, j, _landing(i, sh, ph, ho, h), _landing(j, sw, pw, wo, w)) for i in range(kh) for j in range(kw)]
        per_image = kh * kw * cg * ho * wo * grad_out.element_size()
        step = max(1, BLOCK_BYTES // per_image) if grad_out.device.type == "cpu" else n
        for k in range(groups):
            for first in range(0, n, step):
                last = min(n, first + step)
                block = matmul(g[k, first * ho * wo : last * ho * wo], kmat[k].t())
                block = block.view(last - first, ho, wo, kh, kw, cg)
                into = grad_x[first:last, :, :, k * cg : (k + 1) * cg]
                for i, j, (rows, ys), (cols_, xs) in taps:
                    # add_, not +=: Python's += on a slice also assigns it back (a copy_ call each)
                    into[:, ys, xs].add_(block[:, rows, cols_, i, j])
                del block  # before the next block is made: the allocator hands the same memory back
        grad_x = grad_x.permute(0, 3, 1, 2)
        if acc != grad_out.dtype:
            grad_x = grad_x.to(grad_out.dtype)
    if needs_input_grad[1]:
        # Correlation of the output gradient with the input gives dL/dw of the flipped
        # kernel; flipping back gives that of the convolution kernel.
        if cols is None:
            cols = _columns(xp, kh, kw, sh, sw, groups)
        dk = torch.stack([matmul(g[k].t(), cols[k]) for k in range(groups)])  # (G, Dg, kh*kw*Cg)
        dk = dk.view(groups, dg, kh, kw, cg).permute(0, 1, 4, 2, 3).reshape(d, cg, kh, kw)
        grad_w = dk.flip(-2, -1)
    if len(needs_input_grad) > 2 and needs_input_grad[2] and bias_dim:
        grad_b = bias_gradient(grad_out, bias_dim)
    return grad_x, grad_w, grad_b
