"""Max pooling (lecture 9, "Max Pooling"): the forward keeps the best-matching position of
each window, the backward routes each gradient to that position only.

    a[m, n] = max_{(i, j) in window(m, n)} z[i, j]        dL/dz[i, j] = sum_{(m, n) won by (i, j)} dL/da[m, n]

**Ties** go to the first maximum in row-major order inside the window (the top-left-most
one), as PyTorch's own kernel does; where windows overlap (AlexNet: 3 wide, stride 2) a
position that wins several windows receives the sum of their gradients.  A window holding
a NaN outputs NaN (as PyTorch); its gradient goes to the window's first position.

On CUDA with Triton the pair runs two kernels instead (``_triton_pool``).  1-D forms pool
over time (N, C, T) as a height-one image.
"""

from __future__ import annotations

import torch

from . import _autograd, _triton
from ._amp import accumulator
from ._checks import pool_args, time_kernel
from .sizes import output_size


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


def max_pool2d_forward(x, kernel, stride, routed: bool = True):
    """(a, saved) for ``x`` (N, C, H, W) and (kh, kw) windows every (sh, sw); without ``routed``
    (nothing will go backward) the winners are not looked for and ``saved`` is None."""
    if _triton.wanted(x, "pool"):
        from ._triton_pool import triton_pool_forward

        out, saved = triton_pool_forward(x, kernel, stride)
        return out, ("triton", *saved)
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh), output_size(w, kw, sw)
    last = _channels_last(x)
    v, hd, wd = (x.permute(0, 2, 3, 1), 1, 2) if last else (x, 2, 3)
    # Separable: the maximum over a kh x kw window is the maximum over kh rows of the
    # maxima along each row.  First maxima compose: the winning row's own first maximum
    # is the window's first maximum in row-major order (PyTorch's tie rule).
    row_max, col = _running_max(v, wd, kw, sw, wo, routed)
    out, row = _running_max(row_max, hd, kh, sh, ho, routed)
    if not routed:
        return (out.permute(0, 3, 1, 2) if last else out), None
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
    return (out.permute(0, 3, 1, 2) if last else out), ("tensor ops", winner, x.shape, last)


def max_pool2d_backward(grad_out, saved, needs=(True,)):
    """(dL/dz,): each output's gradient added at the position that won its window."""
    if saved[0] == "triton":
        from ._triton_pool import triton_pool_backward

        return (triton_pool_backward(grad_out, saved[1:]),)
    _, winner, (n, c, h, w), last = saved
    acc = accumulator(grad_out.dtype)  # a position that wins overlapping windows sums their gradients
    if last:  # (N, H*W, C): each winner's index runs along the plane, channel by channel
        grad_x = grad_out.new_zeros(n, h * w, c, dtype=acc)
        grad_x.scatter_add_(1, winner.reshape(n, -1, c), grad_out.permute(0, 2, 3, 1).reshape(n, -1, c).to(acc))
        return (grad_x.view(n, h, w, c).permute(0, 3, 1, 2).to(grad_out.dtype),)
    grad_x = grad_out.new_zeros(n * c, h * w, dtype=acc)
    grad_x.scatter_add_(1, winner.reshape(n * c, -1), grad_out.reshape(n * c, -1).to(acc))
    return (grad_x.view(n, c, h, w).to(grad_out.dtype),)


def max_pool1d_forward(x, kernel_size, stride=None):
    out, saved = max_pool2d_forward(x.unsqueeze(2), (1, kernel_size), (1, stride or kernel_size))
    return out.squeeze(2), saved


def max_pool1d_backward(grad_out, saved, needs=(True,)):
    return (max_pool2d_backward(grad_out.unsqueeze(2), saved, needs)[0].squeeze(2),)


MaxPooling2d = _autograd.function("MaxPooling2d", max_pool2d_forward, max_pool2d_backward, 1)


def max_pool2d(x: torch.Tensor, kernel_size, stride=None) -> torch.Tensor:
    """Max pooling over (kh, kw) windows every ``stride`` (default: the window, no overlap)."""
    kernel, stride = pool_args(x, kernel_size, stride, 4, "max pooling")
    if not (x.requires_grad and torch.is_grad_enabled()):  # evaluation: no winners to route to
        return max_pool2d_forward(x, kernel, stride, routed=False)[0]
    return MaxPooling2d.apply(x, kernel, stride)


def max_pool1d(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    kernel, stride = time_kernel(x, kernel_size, stride)
    return max_pool2d(x.unsqueeze(2), kernel, stride).squeeze(2)
