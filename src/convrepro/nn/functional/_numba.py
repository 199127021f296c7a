"""Whether a layer runs its Numba loop (``_numba_*.py``) instead of its tensor-op path:
on CPU tensors of float32 and float64 when the compiled loops run at all
(``convrepro.compiled``); anything else -- bfloat16 under CPU autocast, CUDA -- keeps the
tensor ops."""

from __future__ import annotations

import torch

from convrepro import compiled

DTYPES = (torch.float32, torch.float64)


def wanted(x: torch.Tensor) -> bool:
    """Whether the CPU loop takes ``x`` (the caller has already offered it to Triton)."""
    return x.device.type == "cpu" and x.dtype in DTYPES and compiled.wanted()
