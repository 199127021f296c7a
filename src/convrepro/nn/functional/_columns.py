"""What both convolution paths share once the receptive fields are laid out as columns."""

from __future__ import annotations

import math
from collections.abc import Callable

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


# The overlap-add of a column gradient with fewer entries than this is one scatter-add
# (one call, on one thread); from it, each input position gathers the entries that read it
# and sums them (three calls, on every thread).  Measured: a single pattern of LeCun's H2
# (4,800 entries) 9.7 against 10.7 us, the TDNN's first layer 2.7 against 9.2; at batch
# 64 the TDNN's 23,000 and 40,000 entries 29.5 / 115 against 23.8 / 32.3 us, LeCun H2's
# 307,000 355 against 223 us.
SCATTER_BELOW = 1 << 14


def readers(index: torch.Tensor, slots: int) -> torch.Tensor:
    """(R, slots): for each of ``slots`` input positions, the flat positions in ``index``
    (which names the input position each column entry reads; ``slots`` is the frame) that
    read it.  R is the most readers any position has; a position with fewer points the rest
    at ``index.numel()``, one past the entries, where ``overlap_add`` puts a zero."""
    index = index.reshape(-1)
    counts = torch.bincount(index, minlength=slots + 1)[:slots]
    entries = torch.argsort(index, stable=True)
    position = index[entries]
    inside = position < slots  # the frame's readers are dropped: its gradient is not wanted
    entries, position = entries[inside], position[inside]
    rank = torch.arange(entries.numel(), device=index.device) - (torch.cumsum(counts, 0) - counts)[position]
    table = torch.full((int(counts.max()) if slots else 0, slots), index.numel(), dtype=torch.int64,
                       device=index.device)
    table[rank, position] = entries
    return table


def overlap_add(dcols: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...],
                readers_of_index: Callable[[], torch.Tensor], framed: bool = True) -> torch.Tensor:
    """What lands on each input position from the column gradient ``dcols`` (shaped like
    ``index``, which numbers the positions of an input laid out as ``shape``), summed: a
    tensor of ``shape``.  The frame's share is dropped (``framed``: whether ``index`` names
    the frame at all).  ``readers_of_index`` gives ``readers(index, slots)``, cached by the
    caller."""
    # (On a GPU always the gather: an accumulating ``put_`` is refused there under
    # deterministic algorithms, which the runs turn on, and the gather needs no atomics.)
    if index.numel() < SCATTER_BELOW and dcols.device.type == "cpu":
        if not framed:  # on-line learning's common case: one allocation, one call
            return dcols.new_zeros(shape).put_(index, dcols, accumulate=True)
        slots = math.prod(shape)
        return dcols.new_zeros(slots + 1).put_(index, dcols, accumulate=True)[:slots].view(shape)
    table = readers_of_index()
    entries = torch.cat([dcols.reshape(-1), dcols.new_zeros(1)])
    return entries.index_select(0, table.view(-1)).view(table.shape).sum(0).view(shape)
