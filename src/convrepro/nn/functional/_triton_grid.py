"""What the Triton kernels share: one flat position split back into its coordinates, and a sum
over positions shared out between programs."""

from __future__ import annotations

import torch
import triton
import triton.language as tl  # noqa: F401  (Triton's interpreter looks for it in a jit function's module)


@triton.jit
def split(flat, rows, cols):
    """flat = (outer * rows + row) * cols + col  ->  (outer, row, col), row-major as PyTorch stores."""
    t = flat // cols
    return t // rows, t % rows, flat % cols


def share_out(m: int, tiles: int, block_m: int, programs: int) -> tuple[int, int]:
    """(parts, positions per part) of a weight gradient's sum over ``m`` positions, so that
    ``tiles`` x parts programs come near ``programs`` (the GPU filled)."""
    blocks = triton.cdiv(m, block_m)
    parts = max(1, min(triton.cdiv(programs, tiles), blocks))
    chunk = triton.cdiv(blocks, parts) * block_m
    return triton.cdiv(m, chunk), chunk


def partial_sums(parts: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Where the parts write: (parts, *shape); one part straight in ``like``'s dtype, several
    in float32 (added by ``total``)."""
    return torch.empty(parts, *shape, dtype=like.dtype if parts == 1 else torch.float32, device=like.device)


def total(sums: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The parts' sum, added in a fixed order (deterministic, no atomics)."""
    return sums[0] if sums.shape[0] == 1 else sums.sum(0).to(dtype)
