"""The lecture's convolution with its backward written out.

Forward is a **convolution** (lecture 9, "How to achieve shift invariance"):

    z[d, m, n] = sum_c sum_m' sum_n' w[d, c, m - m', n - n'] a[c, m', n']

so the kernel is flipped relative to PyTorch's cross-correlation: ``conv2d(x, w)`` equals
PyTorch's own conv2d applied with ``w.flip(-2, -1)`` (the tests check exactly that).
Backward is written out, not left to autograd (slides "Backprop of Convolution is
Correlation"):

* input gradient  = correlation of the output gradient with the kernel,
  dL/da[c, m', n'] = sum_d sum_m sum_n w[d, c, m - m', n - n'] dL/dz[d, m, n];
* weight gradient = correlation of the output gradient with the input,
  dL/dw[d, c, m', n'] = sum_m sum_n dL/dz[d, m, n] a[c, m - m', n - n'].

Both sums are evaluated the way a GEMM library wants them: the input is laid out once as
columns (one row per output position, ``im2col`` through ``as_strided``), so that each of
the three sums is a single batched matrix multiply over the whole batch; the input
gradient's sum over shifts is then an overlap-add of the column gradient, one strided add
per kernel offset.  Activations are kept channels-last (N, H, W, C) inside, which makes
the column gather read contiguous channel vectors and the output a free view.
"""

from __future__ import annotations

import functools
import threading

import torch
from torch.autograd import Function

from . import _checks


def _padded_channels_last(x: torch.Tensor, ph: int, pw: int, value: float) -> torch.Tensor:
    """(N, C, H, W) in any layout -> contiguous (N, H + 2ph, W + 2pw, C), framed by ``value``."""
    n, c, h, w = x.shape
    if ph == 0 and pw == 0:
        return x.permute(0, 2, 3, 1).contiguous()
    xp = x.new_full((n, h + 2 * ph, w + 2 * pw, c), value)
    xp[:, ph : ph + h, pw : pw + w, :] = x.permute(0, 2, 3, 1)
    return xp


def _workspace(slot: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor reused across calls (per thread, device and dtype).

    The column matrices are large (AlexNet conv2 at batch 32: 224 MB) and live only inside
    one forward or backward; allocating them fresh each time costs more in page faults
    than the copy itself.  Only temporaries that never leave a Function use this.
    """
    key = (slot, like.device, like.dtype)
    cache = _SCRATCH.__dict__.setdefault("buffers", {})
    numel = 1
    for n in shape:
        numel *= n
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, device=like.device, dtype=like.dtype)
        cache[key] = buf
    return buf[:numel].view(shape)


_SCRATCH = threading.local()


# Below this many column entries, one gather (and one index_add) with a cached index beats
# kh*kw strided copies: the per-op overhead dominates small layers (LeCun's per-pattern
# training runs ~170,000 forward/backward passes through H1 and H2).
SMALL_COLUMNS = 1 << 20


@functools.lru_cache(maxsize=128)
def _gather_index(shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int,
                  groups: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions that im2col reads, and that the column gradient's overlap-add writes.

    ``shape`` is the padded channels-last input (N, Hp, Wp, C).  The first index lays the
    input out as (G, M, kh*kw*Cg) columns; the second maps the transposed column gradient
    (G, kh, kw, Cg, N, Ho, Wo) onto a (G, Cg, N, Hp, Wp) gradient buffer.
    """
    n, hp, wp, c = shape
    ho, wo, cg = (hp - kh) // sh + 1, (wp - kw) // sw + 1, c // groups
    pos = torch.arange(n * hp * wp * c, device=device).view(n, hp, wp, c)
    gather = _receptive_fields(pos, kh, kw, sh, sw, groups).reshape(groups, n * ho * wo, kh * kw * cg)
    out_pos = torch.arange(groups * cg * n * hp * wp, device=device).view(groups, cg, n, hp, wp)
    s_g, s_c, s_n, s_h, s_w = out_pos.stride()
    scatter = out_pos.as_strided((groups, kh, kw, cg, n, ho, wo),
                                 (s_g, s_h, s_w, s_c, s_n, sh * s_h, sw * s_w)).reshape(-1)
    return gather, scatter


def _receptive_fields(xp: torch.Tensor, kh: int, kw: int, sh: int, sw: int, groups: int) -> torch.Tensor:
    """(G, N, Ho, Wo, kh, kw, Cg) view of every output position's receptive field, no copy."""
    n, hp, wp, c = xp.shape
    ho, wo, cg = (hp - kh) // sh + 1, (wp - kw) // sw + 1, c // groups
    s_n, s_h, s_w, s_c = xp.stride()
    return xp.as_strided((groups, n, ho, wo, kh, kw, cg), (cg * s_c, s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))


def _columns(xp: torch.Tensor, kh: int, kw: int, sh: int, sw: int, groups: int) -> torch.Tensor:
    """im2col: (G, N*Ho*Wo, kh*kw*Cg), row r holds the receptive field of output position r.

    With many channels it is filled one kernel offset at a time: each copy moves whole
    contiguous channel vectors, several times faster than one copy from a 7-D strided view.
    """
    n, hp, wp, c = xp.shape
    ho, wo, cg = (hp - kh) // sh + 1, (wp - kw) // sw + 1, c // groups
    if n * ho * wo * kh * kw * c < SMALL_COLUMNS:
        gather, _ = _gather_index(tuple(xp.shape), kh, kw, sh, sw, groups, xp.device)
        return xp.reshape(-1)[gather]
    cols = _workspace("columns", (groups, n, ho, wo, kh, kw, cg), xp)
    if cg < 16:  # few channels (an image's RGB): one gather from a 7-D strided view wins
        cols.copy_(_receptive_fields(xp, kh, kw, sh, sw, groups))
    else:
        src = xp.view(n, hp, wp, groups, cg).permute(3, 0, 1, 2, 4)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, :, i, j, :] = src[:, :, i : i + sh * (ho - 1) + 1 : sh,
                                                j : j + sw * (wo - 1) + 1 : sw, :]
    return cols.view(groups, n * ho * wo, kh * kw * cg)


def _kernel_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(D, Cg, kh, kw) -> flipped kernel as (G, kh*kw*Cg, Dg): the convolution's matrix."""
    d, cg, kh, kw = weight.shape
    flipped = weight.flip(-2, -1).view(groups, d // groups, cg, kh, kw)
    return flipped.permute(0, 3, 4, 2, 1).reshape(groups, kh * kw * cg, d // groups)


class Convolution2d(Function):
    """z = w * a (+ bias), with w * a the lecture's 2-D multi-channel convolution."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, pad_value, groups):
        n, c, h, w = x.shape
        d, cg, kh, kw = weight.shape
        (sh, sw), (ph, pw) = stride, padding
        xp = _padded_channels_last(x, ph, pw, pad_value)
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = _columns(xp, kh, kw, sh, sw, groups)
        kmat = _kernel_matrix(weight, groups)
        if groups == 1:
            if bias is not None and bias.dim() == 1:
                out = torch.addmm(bias, cols[0], kmat[0])
            else:
                out = torch.mm(cols[0], kmat[0])
            out = out.view(n, ho, wo, d)
        else:
            out = torch.bmm(cols, kmat).permute(1, 0, 2).reshape(n, ho, wo, d)
            if bias is not None and bias.dim() == 1:
                out += bias
        if bias is not None and bias.dim() == 3:  # LeCun: one bias per output unit
            out += bias.permute(1, 2, 0)
        # Large column matrices are rebuilt in backward from the padded input rather than
        # saved: a kh*kw/stride^2 smaller footprint, and the rebuild costs less than fresh
        # memory.  Small ones (held in no workspace) are simply kept.
        small = cols.numel() < SMALL_COLUMNS
        ctx.save_for_backward(
            (cols if small else xp) if ctx.needs_input_grad[1] else None,
            kmat if ctx.needs_input_grad[0] else None,
        )
        ctx.small = small
        ctx.geometry = (x.shape, weight.shape, stride, padding, groups, bias is not None and bias.dim())
        return out.permute(0, 3, 1, 2)  # (N, D, Ho, Wo), channels-last in memory

    @staticmethod
    def backward(ctx, grad_out):
        saved, kmat = ctx.saved_tensors
        (n, c, h, w), (d, cg, kh, kw), (sh, sw), (ph, pw), groups, bias_dim = ctx.geometry
        ho, wo = grad_out.shape[-2:]
        dg = d // groups
        # (G, M, Dg): the output gradient, one row per output position.
        g = grad_out.permute(0, 2, 3, 1).reshape(n * ho * wo, groups, dg).transpose(0, 1)

        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # Correlation of the output gradient with the kernel: every output position sends
            # dL/dz back through the kernel (one GEMM), then the kh*kw shifted copies are
            # summed.  The column gradient is made transposed, (G, kh*kw*Cg, M), so that
            # each shifted copy is a run of whole (Ho, Wo) planes: the adds stream memory.
            dcols = _workspace("column_gradient", (groups, kh * kw * cg, n * ho * wo), grad_out)
            torch.bmm(kmat, g.transpose(1, 2), out=dcols)
            if dcols.numel() < SMALL_COLUMNS:
                _, scatter = _gather_index((n, h + 2 * ph, w + 2 * pw, c), kh, kw, sh, sw, groups,
                                           grad_out.device)
                dxp = grad_out.new_zeros(groups * cg * n * (h + 2 * ph) * (w + 2 * pw))
                dxp.index_add_(0, scatter, dcols.reshape(-1))
            else:
                dcols = dcols.view(groups, kh, kw, cg, n, ho, wo)
                dxp = grad_out.new_zeros(groups, cg, n, h + 2 * ph, w + 2 * pw)
                for i in range(kh):
                    for j in range(kw):
                        dxp[:, :, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += (
                            dcols[:, i, j]
                        )
            # The frame (pad_value) is a constant: its gradient is dropped.
            dxp = dxp.view(c, n, h + 2 * ph, w + 2 * pw)
            grad_x = dxp[:, :, ph : ph + h, pw : pw + w].permute(1, 0, 2, 3)
        if ctx.needs_input_grad[1]:
            # Correlation of the output gradient with the input gives dL/dw of the flipped
            # kernel; flipping back gives that of the convolution kernel.
            cols = saved if ctx.small else _columns(saved, kh, kw, sh, sw, groups)
            dk = torch.bmm(g.transpose(1, 2), cols)  # (G, Dg, kh*kw*Cg)
            dk = dk.view(groups, dg, kh, kw, cg).permute(0, 1, 4, 2, 3).reshape(d, cg, kh, kw)
            grad_w = dk.flip(-2, -1)
        if ctx.needs_input_grad[2]:
            if bias_dim == 1:
                grad_b = grad_out.sum(dim=(0, 2, 3))
            else:
                grad_b = grad_out.sum(dim=0)
        return grad_x, grad_w, grad_b, None, None, None, None


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride=1,
    padding=0,
    pad_value: float = 0.0,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution (kernel flipped, as in the lecture) of ``x`` (N, C, H, W).

    ``weight`` is (D, C / groups, kh, kw).  ``bias`` is one per output map, (D,), or one
    per output unit, (D, H_out, W_out) as in LeCun et al. 1989.  ``padding`` frames the
    input with ``pad_value`` (LeCun frames with -1, the background grey level).
    """
    stride, padding = _checks.pair(stride, "stride"), _checks.pair(padding, "padding")
    _checks.rank(x, 4, "input", "N, C, H, W")
    _checks.rank(weight, 4, "weight", "D, C/groups, kh, kw")
    _checks.positive(stride, "stride")
    _checks.non_negative(padding, "padding")
    _check_groups(x.shape[1], weight, groups)
    padded = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
    _checks.window_fits(padded, tuple(weight.shape[2:]), "padded input", "kernel")
    out_size = tuple((p - k) // s + 1 for p, k, s in zip(padded, weight.shape[2:], stride, strict=True))
    _check_bias(bias, weight.shape[0], out_size)
    return Convolution2d.apply(x, weight, bias, stride, padding, float(pad_value), groups)


def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    pad_value: float = 0.0,
    groups: int = 1,
) -> torch.Tensor:
    """1-D convolution over time of ``x`` (N, C, T): the TDNN's time-delay layer.

    The same Function as :func:`conv2d` on a height-one image; ``bias`` is (D,) or, one
    per output unit, (D, T_out).
    """
    _checks.rank(x, 3, "input", "N, C, T")
    _checks.rank(weight, 3, "weight", "D, C/groups, K")
    if bias is not None and bias.dim() == 2:
        bias = bias.unsqueeze(1)
    out = conv2d(
        x.unsqueeze(2), weight.unsqueeze(2), bias,
        stride=(1, int(stride)), padding=(0, int(padding)), pad_value=pad_value, groups=groups,
    )
    return out.squeeze(2)


def _check_groups(channels: int, weight: torch.Tensor, groups: int) -> None:
    d, cg = weight.shape[:2]
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    if channels % groups or d % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({channels}) and the "
            f"output maps ({d})"
        )
    if cg * groups != channels:
        raise ValueError(
            f"weight {tuple(weight.shape)} expects {cg * groups} input channels with "
            f"groups={groups}, but the input has {channels}"
        )


def _check_bias(bias: torch.Tensor | None, d: int, out_size: tuple[int, ...]) -> None:
    if bias is None:
        return
    per_map, per_unit = (d,), (d, *out_size)
    if tuple(bias.shape) not in (per_map, per_unit):
        raise ValueError(
            f"bias must be one per output map {per_map} or one per output unit {per_unit}, "
            f"got {tuple(bias.shape)}"
        )
