"""A compiled loop's slices run on PyTorch's own OpenMP threads.

After each parallel tensor operation GNU OpenMP's workers spin for a while before they
sleep, waiting for the next one (milliseconds on a Zen 5, whose PAUSE is slow).  A loop
shared out to Python threads in that time competes with them for the cores: channels-last
max pooling's backward took 15-17 ms right after a tensor operation, 9 ms otherwise
(PyTorch's own: 9).  Run as a parallel region of PyTorch's OpenMP runtime (``GOMP_parallel``
of the libgomp its Linux wheels ship), the slices go to those very workers, awake.

For each kernel and argument types a Numba C callback is made (once per process): it reads
the arguments from a block of int64 (an array as its address and shape, a scalar as a
one-element array), takes its thread's share of the items (``omp_get_thread_num`` of
``omp_get_num_threads``) and calls the kernel.  Where this cannot run -- no libgomp beside
PyTorch (macOS, Windows, other builds), a forked child (its OpenMP threads did not come
along: a region there waits for them forever), an array that is not C-contiguous, or
``CONVREPRO_OPENMP_TEAM=0`` -- ``run`` says so and the caller uses Python threads.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

import convrepro


@functools.cache
def _runtime():
    """(GOMP_parallel, omp_get_thread_num, omp_get_num_threads) of PyTorch's libgomp, or None."""
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    if not path.is_file() or "OpenMP" not in torch.__config__.parallel_info():
        return None
    lib = ctypes.CDLL(str(path))  # the library PyTorch loaded: the same handle, the same threads
    parallel = lib.GOMP_parallel
    parallel.argtypes, parallel.restype = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint), None
    thread_num, num_threads = lib.omp_get_thread_num, lib.omp_get_num_threads
    for f in (thread_num, num_threads):
        f.argtypes, f.restype = (), ctypes.c_int
    return parallel, thread_num, num_threads


def available() -> bool:
    return (os.environ.get("CONVREPRO_OPENMP_TEAM", "") != "0" and not convrepro.forked
            and _runtime() is not None)


@functools.cache
def _address(dtype):
    """An intrinsic turning an int64 address into a pointer to ``dtype`` (a Numba type)."""
    pointer = types.CPointer(dtype)

    @intrinsic
    def address(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer))
        return pointer(types.int64), codegen

    return address


@functools.cache
def _callback(kernel, spec: tuple[tuple[str, int], ...]):
    """The C callback for ``kernel`` with arguments of ``spec``: (dtype name, ndim) each, ndim 0
    for a scalar."""
    _, thread_num, num_threads = _runtime()
    names = {"carray": numba.carray, "int64": np.int64, "kernel": kernel,
             "thread_num": thread_num, "num_threads": num_threads}
    lines, args, at = [], [], 1
    for i, (dtype, ndim) in enumerate(spec):
        names[f"address{i}"] = _address(numba.from_dtype(np.dtype(dtype)))
        shape = ", ".join(f"a[{at + 1 + d}]" for d in range(ndim)) if ndim else "1"
        lines.append(f"    v{i} = carray(address{i}(a[{at}]), ({shape},)){'' if ndim else '[0]'}")
        args.append(f"v{i}")
        at += 1 + ndim
    source = "\n".join([
        "def team(data):",
        f"    a = carray(data, ({at},), dtype=int64)",
        *lines,
        "    t, k, count = thread_num(), num_threads(), a[0]",
        f"    kernel({', '.join(args)}, count * t // k, count * (t + 1) // k)",
    ])
    exec(compile(source, f"<OpenMP team of {kernel.__name__}>", "exec"), names)  # noqa: S102 (our own text)
    return numba.cfunc(types.void(types.voidptr))(names["team"])


def run(kernel, count: int, parts: int, args) -> bool:
    """``kernel(*args, lo, hi)`` over ``count`` items in ``parts`` slices on PyTorch's OpenMP
    threads; False (nothing run) where that cannot be done (see the module's docstring)."""
    if not available():
        return False
    block, spec, scalars = [count], [], []
    for arg in args:
        if isinstance(arg, np.ndarray):
            if not arg.flags.c_contiguous:
                return False
            array, shape = arg, arg.shape
        elif isinstance(arg, (bool, int, float, np.generic)):
            array, shape = np.asarray([arg]), ()
            scalars.append(array)  # alive until the region has read it
        else:
            return False
        spec.append((array.dtype.name, len(shape)))
        block += [array.ctypes.data, *shape]
    block = np.asarray(block, dtype=np.int64)
    parallel = _runtime()[0]
    parallel(_callback(kernel, tuple(spec)).address, block.ctypes.data, parts, 0)
    return True
