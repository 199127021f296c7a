"""Pooling with hand-written backward (lecture 9, "Max Pooling" and "Other types of pooling").

* max pooling: forward takes the best-matching position of each window; backward routes
  each output gradient to that position only.  **Ties** go to the first maximum in
  row-major order inside the window (the top-left-most one), as PyTorch's own kernel does;
  where windows overlap (AlexNet: 3 wide, stride 2) a position that wins several windows
  receives the sum of their gradients.  A window holding a NaN outputs NaN (as PyTorch);
  its gradient goes to the window's first position.
* average pooling: backward spreads each gradient evenly over its window.
* decimation pooling: keep every factor-th sample (a[m] = z[mM]); backward scatters the
  gradient into zeros.

1-D forms pool over time (N, C, T) and run the 2-D Function on a height-one image.
On CUDA with Triton, max pooling runs two kernels instead (``_triton_pool``); on a CPU with
Numba, a channels-last map in float32 or float64 goes through two compiled loops
(``_numba_pool``).
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from . import _checks, _numba, _triton
from ._amp import accumulator
from .sizes import output_size


def _windows(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, Ho, Wo, kh, kw) view of every pooling window, no copy."""
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
    s_n, s_c, s_h, s_w = x.stride()
    return x.as_strided((n, c, ho, wo, kh, kw), (s_n, s_c, sh * s_h, sw * s_w, s_h, s_w))


def _taps(t: torch.Tensor, dim: int, k: int, s: int, n_out: int) -> list[torch.Tensor]:
    """The k strided views of ``t`` along ``dim``: view j holds tap j of every window."""
    span = s * (n_out - 1) + 1
    step = (slice(None),) * dim + (slice(None, None, s),)
    return [t.narrow(dim, j, span)[step] for j in range(k)]


def _running_max(t: torch.Tensor, dim: int, k: int, s: int, n_out: int, need_winner: bool):
    """Maximum of every k-wide window along ``dim`` (stride s), and which tap won it.

    The maximum is a chain of elementwise ``maximum``s over the shifted views (vectorised,
    no window is ever materialised).  The winner is the first maximum: the number of
    running maxima before the last that are still below it (uint8, taps < 256).
    """
    taps = _taps(t, dim, k, s, n_out)
    running = [taps[0]]
    for tap in taps[1:]:
        running.append(torch.maximum(running[-1], tap))
    best = running[-1]
    if not need_winner:
        return best, None
    winner = torch.zeros_like(best, dtype=torch.uint8)  # in best's own memory layout
    for r in running[:-1]:
        winner += r < best
    return best, winner


def _channels_last(x: torch.Tensor) -> bool:
    """A channels-last tensor (what the convolution hands on) is pooled as its (N, H, W, C)
    view: every step then reads and writes memory in order (measured 4x slower otherwise)."""
    return x.dim() == 4 and x.shape[1] > 1 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


class MaxPooling2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride):
        (kh, kw), (sh, sw) = kernel, stride
        n, c, h, w = x.shape
        ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
        last = _channels_last(x)
        v, hd, wd = (x.permute(0, 2, 3, 1), 1, 2) if last else (x, 2, 3)
        # Separable: the maximum over a kh x kw window is the maximum over kh rows of the
        # maxima along each row.  First maxima compose: the winning row's own first maximum
        # is the window's first maximum in row-major order (PyTorch's tie rule).
        need = ctx.needs_input_grad[0]
        row_max, col = _running_max(v, wd, kw, sw, wo, need)
        out, row = _running_max(row_max, hd, kh, sh, ho, need)
        if need:
            # Flat index of each winner in its (H * W) input plane, for the backward's routing.
            along = [1, 1, 1, 1]
            along[hd] = ho
            top = row.to(torch.int64)
            top += torch.arange(0, ho * sh, sh, device=x.device).view(along)
            left = col.gather(hd, top)
            along[hd], along[wd] = 1, wo
            winner = top.mul_(w)
            winner += torch.arange(0, wo * sw, sw, device=x.device).view(along)
            winner += left
            ctx.save_for_backward(winner)
        ctx.in_shape, ctx.last = x.shape, last
        return out.permute(0, 3, 1, 2) if last else out

    @staticmethod
    def backward(ctx, grad_out):
        (winner,) = ctx.saved_tensors
        n, c, h, w = ctx.in_shape
        acc = accumulator(grad_out.dtype)  # a position that wins overlapping windows sums their gradients
        if ctx.last:  # (N, H*W, C): each winner's index runs along the plane, channel by channel
            grad_x = grad_out.new_zeros(n, h * w, c, dtype=acc)
            grad_x.scatter_add_(1, winner.reshape(n, -1, c), grad_out.permute(0, 2, 3, 1).reshape(n, -1, c).to(acc))
            return grad_x.view(n, h, w, c).permute(0, 3, 1, 2).to(grad_out.dtype), None, None
        grad_x = grad_out.new_zeros(n * c, h * w, dtype=acc)
        grad_x.scatter_add_(1, winner.reshape(n * c, -1), grad_out.reshape(n * c, -1).to(acc))
        return grad_x.view(n, c, h, w).to(grad_out.dtype), None, None


class AveragePooling2d(Function):
    @staticmethod
    def forward(ctx, x, kernel, stride):
        (kh, kw), (sh, sw) = kernel, stride
        ctx.geometry = (x.shape, kernel, stride)
        return _windows(x, kh, kw, sh, sw).mean(dim=(-2, -1))

    @staticmethod
    def backward(ctx, grad_out):
        (n, c, h, w), (kh, kw), (sh, sw) = ctx.geometry
        ho, wo = grad_out.shape[-2:]
        share = grad_out.to(accumulator(grad_out.dtype)) / (kh * kw)
        grad_x = share.new_zeros(n, c, h, w)
        if (kh, kw) == (sh, sw):  # windows tile the input: one strided write per window
            grad_x[:, :, : ho * kh, : wo * kw] = (
                share[:, :, :, None, :, None].expand(n, c, ho, kh, wo, kw).reshape(n, c, ho * kh, wo * kw)
            )
        else:  # overlapping windows: each offset of the window adds its share
            for i in range(kh):
                for j in range(kw):
                    grad_x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += share
        return grad_x.to(grad_out.dtype), None, None


class DecimationPooling2d(Function):
    @staticmethod
    def forward(ctx, x, factor):
        fh, fw = factor
        ctx.geometry = (x.shape, factor)
        return x[:, :, ::fh, ::fw].contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        shape, (fh, fw) = ctx.geometry
        grad_x = grad_out.new_zeros(shape)
        grad_x[:, :, ::fh, ::fw] = grad_out
        return grad_x, None


def _pool_args(x, kernel_size, stride, rank, name):
    _checks.rank(x, rank, "input", "N, C, H, W" if rank == 4 else "N, C, T")
    kernel = _checks.pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _checks.pair(stride, "stride")
    _checks.positive(kernel, "kernel_size")
    _checks.positive(stride, "stride")
    _checks.window_fits(tuple(x.shape[2:]), kernel, "input", f"{name} window")
    return kernel, stride


def max_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    """Max pooling over (kh, kw) windows every ``stride`` (default: the window, no overlap)."""
    kernel, stride = _pool_args(x, kernel_size, stride, 4, "max pooling")
    if _triton.wanted(x, "pool"):
        from ._triton_pool import TritonMaxPooling2d

        return TritonMaxPooling2d.apply(x, kernel, stride)
    if _channels_last(x) and _numba.wanted(x):
        from ._numba_pool import NumbaMaxPooling2d

        return NumbaMaxPooling2d.apply(x, kernel, stride)
    return MaxPooling2d.apply(x, kernel, stride)


def avg_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    kernel, stride = _pool_args(x, kernel_size, stride, 4, "average pooling")
    return AveragePooling2d.apply(x, kernel, stride)


def decimation_pool2d(x: torch.Tensor, factor) -> torch.Tensor:
    """Keep every ``factor``-th row and column, starting with the first (a[m] = z[mM])."""
    _checks.rank(x, 4, "input", "N, C, H, W")
    factor = _checks.pair(factor, "factor")
    _checks.positive(factor, "factor")
    return DecimationPooling2d.apply(x, factor)


def _time_kernel(x, kernel_size, stride):
    _checks.rank(x, 3, "input", "N, C, T")
    return (1, int(kernel_size)), None if stride is None else (1, int(stride))


def max_pool1d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    kernel, stride = _time_kernel(x, kernel_size, stride)
    return max_pool2d(x.unsqueeze(2), kernel, stride).squeeze(2)


def avg_pool1d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    kernel, stride = _time_kernel(x, kernel_size, stride)
    return avg_pool2d(x.unsqueeze(2), kernel, stride).squeeze(2)


def decimation_pool1d(x: torch.Tensor, factor: int) -> torch.Tensor:
    _checks.rank(x, 3, "input", "N, C, T")
    return decimation_pool2d(x.unsqueeze(2), (1, int(factor))).squeeze(2)
