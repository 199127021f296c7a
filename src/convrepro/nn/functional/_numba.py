"""Whether a layer runs its Numba kernel (``_numba_*.py``) instead of its tensor-op path.

Some layers are one short loop per output when written out, and a chain of a dozen
whole-tensor passes when written with tensor operations; on a CPU the passes, not the
arithmetic, set the time.  Numba compiles the written-out loop (LLVM, inside the wheel:
no compiler on the machine); the compiled code is cached beside the source, so each
kernel compiles once per install, not once per process.

The kernels run on CPU tensors of float32 and float64 when Numba imports; anything else
(bfloat16 under CPU autocast, CUDA) keeps the tensor-op path, and so does an install
without Numba.  ``CONVREPRO_NUMBA=0`` keeps the CPU on the tensor-op path too (to compare
the two).  A large call is split over the batch into one slice per PyTorch thread; the
kernels release the GIL, so the slices run side by side.
"""

from __future__ import annotations

import functools
import os

import torch

from convrepro.threads import pool

DTYPES = (torch.float32, torch.float64)
# Splitting pays from a few hundred thousand elements: on 2 cores, max pooling's forward
# + backward took 26-31 against 33-35 ms for 2.2M outputs, 10-12 against 12-13 ms for 1.4M,
# and the same for 0.3M (2.3-3.0 against 2.5-3.1 ms).
SPLIT_FROM = 1 << 18


@functools.lru_cache(maxsize=1)
def available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def wanted(x: torch.Tensor) -> bool:
    """Whether the CPU kernel takes ``x`` (the caller has already offered it to Triton)."""
    return (x.device.type == "cpu" and x.dtype in DTYPES and os.environ.get("CONVREPRO_NUMBA", "") != "0"
            and available())


def over_batch(kernel, batch: int, work: int, *args) -> None:
    """``kernel(*args, lo, hi)`` over batch slices [lo, hi): one slice, or one per thread."""
    parts = min(batch, torch.get_num_threads()) if work >= SPLIT_FROM else 1
    if parts <= 1:
        kernel(*args, 0, batch)
        return
    bounds = [batch * k // parts for k in range(parts + 1)]
    jobs = [pool(parts).submit(kernel, *args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for job in jobs:
        job.result()
