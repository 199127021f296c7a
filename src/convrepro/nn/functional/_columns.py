"""What both convolution paths share once the receptive fields are laid out as columns."""

from __future__ import annotations

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
        out += bias.permute(1, 2, 0)
    return out.permute(0, 3, 1, 2)


def bias_gradient(grad_out: torch.Tensor, bias_dim: int) -> torch.Tensor:
    """One bias per map sums over batch and positions; one per unit over the batch only."""
    return grad_out.sum(dim=(0, 2, 3)) if bias_dim == 1 else grad_out.sum(dim=0)
