"""Loops compiled by Numba, where tensor operations would take a pass over memory per step.

Some work is one short loop per element when written out, and a chain of whole-tensor
passes when written with tensor operations; on a CPU the passes, not the arithmetic, set
the time.  Numba compiles the written-out loop (LLVM, inside the wheel: no compiler on the
machine); the compiled code is cached beside its source, so each loop compiles once per
install, not once per process.  Who uses one: max pooling of channels-last maps
(``nn/functional/_numba_pool.py``) and the images' crops on a CPU
(``data/images/_augment_loops.py``).

Every such loop has a tensor-op twin giving the same numbers, which runs when Numba does
not import or ``CONVREPRO_NUMBA=0`` (to compare the two).  A large call is split into one
slice per PyTorch thread, run on PyTorch's own OpenMP threads where it can be
(``convrepro.omp_team``), else on Python threads (the loops release the GIL).
"""

from __future__ import annotations

import functools
import importlib
import os

import torch

from convrepro.threads import pool

# Splitting pays from a few hundred thousand elements: on 2 cores, max pooling's forward
# + backward took 26-31 against 33-35 ms for 2.2M outputs, 10-12 against 12-13 ms for 1.4M,
# and the same for 0.3M (2.3-3.0 against 2.5-3.1 ms).
SPLIT_FROM = 1 << 18


@functools.cache
def importable(module: str) -> bool:
    """Whether ``module`` imports: the compilers (Numba, Triton) are optional."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def available() -> bool:
    return importable("numba")


def wanted() -> bool:
    """Whether the compiled loops run (Numba imports, ``CONVREPRO_NUMBA`` is not 0)."""
    return os.environ.get("CONVREPRO_NUMBA", "") != "0" and available()


def over_slices(kernel, count: int, work: int, *args) -> None:
    """``kernel(*args, lo, hi)`` over slices [lo, hi) of ``count`` items (images, a batch's
    samples): one slice, or one per thread when ``work`` (elements) is large."""
    parts = min(count, torch.get_num_threads()) if work >= SPLIT_FROM else 1
    if parts <= 1:
        kernel(*args, 0, count)
        return
    from convrepro import omp_team  # imports Numba: only where a compiled loop runs

    if omp_team.run(kernel, count, parts, args):  # on PyTorch's own OpenMP threads (see there)
        return
    bounds = [count * k // parts for k in range(parts + 1)]
    jobs = [pool(parts).submit(kernel, *args, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    for job in jobs:
        job.result()
