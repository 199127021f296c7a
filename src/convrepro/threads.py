"""One intra-op thread for stretches of many tiny tensor ops.

A per-pattern training step (the 1989 papers) or a per-image crop (AlexNet's augmentation on
a CPU) is hundreds of operations of well under a millisecond each: intra-op threads only add
synchronisation, and when another process shares the cores, spinning OpenMP workers slow
every such op by one to two orders of magnitude (measured: LeCun passes of 5 s became
30-40 s; a 227 x 227 crop took 16 ms instead of 0.16 ms).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
