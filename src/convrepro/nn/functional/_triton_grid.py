"""What the Triton kernels share: one flat position split back into its coordinates."""

from __future__ import annotations

import triton
import triton.language as tl  # noqa: F401  (Triton's interpreter looks for it in a jit function's module)


@triton.jit
def split(flat, rows, cols):
    """flat = (outer * rows + row) * cols + col  ->  (outer, row, col), row-major as PyTorch stores."""
    t = flat // cols
    return t // rows, t % rows, flat % cols
