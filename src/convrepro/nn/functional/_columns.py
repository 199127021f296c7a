"""What both convolution paths share once the receptive fields are laid out as columns."""

from __future__ import annotations

import math

import torch

from ._gemm import matmul


def output_from_columns(cols: torch.Tensor, kmat: torch.Tensor, bias: torch.Tensor | None,
                        n: int, ho: int, wo: int) -> torch.Tensor:
    """z = columns (G, M, K) @ kernel matrix (G, K, Dg) + bias, as (N, D, Ho, Wo) channels-last.

    One GEMM for the whole batch, one per group (``_gemm``); the per-map bias rides in the
    product, a per-unit bias (LeCun, shape (D, Ho, Wo)) is added to the channels-last result.
    """
    groups, dg = kmat.shape[0], kmat.shape[2]
    per_map = bias is not None and bias.dim() == 1
    if groups == 1:
        out = matmul(cols[0], kmat[0], bias if per_map else None).view(n, ho, wo, dg)
    else:
        out = torch.cat([matmul(cols[k], kmat[k], bias[k * dg:(k + 1) * dg] if per_map else None)
                         for k in range(groups)], dim=1).view(n, ho, wo, groups * dg)
    if bias is not None and bias.dim() == 3:
        # Broadcast over a batch, made contiguous first (768 values for LeCun's H1): added as
        # a strided view it took 15.7 against 5.8 us at batch 64.
        out += bias.permute(1, 2, 0).contiguous() if n > 1 else bias.permute(1, 2, 0)
    return out.permute(0, 3, 1, 2)


def bias_gradient(grad_out: torch.Tensor, bias_dim: int) -> torch.Tensor:
    """One bias per map sums over batch and positions; one per unit over the batch only."""
    if bias_dim == 1:
        return grad_out.sum(dim=(0, 2, 3))
    if grad_out.shape[0] == 1:  # on-line learning: the one pattern's gradient is the sum
        return grad_out[0]
    if grad_out.dim() == 4 and not grad_out.is_contiguous() and grad_out.permute(0, 2, 3, 1).is_contiguous():
        # A channels-last gradient (what this convolution's output leads to) summed in its own
        # memory order: as an (N, C, H, W) reduction it took 19.7 against 5.2 us for LeCun's
        # H1 at batch 64.
        return grad_out.permute(0, 2, 3, 1).sum(0).permute(2, 0, 1)
    return grad_out.sum(dim=0)


def overlap_add(dcols: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...], framed: bool = True) -> torch.Tensor:
    """What lands on each input position from the column gradient ``dcols`` (shaped like
    ``index``, which numbers the positions of an input laid out as ``shape``), summed: one
    accumulating ``put_``, the transpose of the forward's gather.  The frame's share (slot
    ``prod(shape)``, where ``framed``) is dropped: the frame is a constant."""
    if not framed:
        return dcols.new_zeros(shape).put_(index, dcols, accumulate=True)
    slots = math.prod(shape)
    return dcols.new_zeros(slots + 1).put_(index, dcols, accumulate=True)[:slots].view(shape)
