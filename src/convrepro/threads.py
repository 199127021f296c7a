"""One intra-op thread for stretches of many tiny tensor ops.

A per-pattern training step (the 1989 papers) or a per-image crop (AlexNet's augmentation on
a CPU) is hundreds of operations of well under a millisecond each: intra-op threads only add
synchronisation, and when another process shares the cores, spinning OpenMP workers slow
every such op by one to two orders of magnitude (measured: LeCun passes of 5 s became
30-40 s; a 227 x 227 crop took 16 ms instead of 0.16 ms).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` Python threads, made once per process: a forked child (a data
    loader's worker) inherits the parent's pools without their threads, and would wait on
    them forever."""
    key = (os.getpid(), threads)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(threads, "convrepro")
    return _POOLS[key]


def image_by_image(fn: Callable[[int], None], count: int, on_cpu: bool = True) -> None:
    """``fn(0)``, ..., ``fn(count - 1)``: a few tensor ops on one image each, writing disjoint outputs.

    On a CPU the images are dealt out to as many Python threads as torch had intra-op threads
    (tensor ops release the GIL), each op on one thread: the cores work on different images
    instead of synchronising over each small op.  Elsewhere (a GPU) one plain loop.
    """
    if not on_cpu:
        for i in range(count):
            fn(i)
        return
    threads = min(torch.get_num_threads(), count)
    with one_thread():
        if threads <= 1:
            for i in range(count):
                fn(i)
            return
        # Grad and inference mode are per thread: the images' threads take the caller's
        # (Lightning evaluates under inference mode, whose tensors others may not write).
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def share(k: int) -> None:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                for i in range(k, count, threads):
                    fn(i)

        for _ in pool(threads).map(share, range(threads)):
            pass  # re-raises the first error
