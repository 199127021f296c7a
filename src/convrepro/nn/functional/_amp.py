"""Mixed precision (``torch.autocast``) for the hand-written layers.

Autocast changes only the ops PyTorch dispatches, not what an autograd Function does with
its inputs; and backward runs outside the autocast region.  So each layer decides its
dtypes explicitly, as PyTorch's own layers behave under autocast:

* convolution: inputs, kernel and bias are cast to the autocast dtype (bf16/fp16) and the
  whole Function, forward and backward, runs in it — the matrix multiplies are the cost,
  and they accumulate in float32 inside the GEMM anyway.  The overlap-add that sums the
  input gradient over kernel offsets (up to 121 terms for AlexNet's conv1) accumulates in
  float32 and is rounded once.
* pooling: runs in the dtype it is given (a maximum is exact in any precision; the winner
  indices are integers); where overlapping windows add gradients, they add in float32.
* local response normalisation: in float32 (a sum of squares and a power, which PyTorch
  also keeps in float32 under autocast), its output returned in the input's dtype.
"""

from __future__ import annotations

import torch


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The lower precision autocast asks for on ``x``'s device, or None when autocast is off."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def no_autocast(x: torch.Tensor):
    """Inside a layer that chose its own dtypes: autocast must not re-cast its ops."""
    return torch.autocast(x.device.type, enabled=False)


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """float32 for sums of half-precision terms; the dtype itself otherwise (float64 stays)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
