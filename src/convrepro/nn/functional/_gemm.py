"""The matrix products under the convolutions' columns, by the library that runs them fastest.

The convolution is written by hand (columns, correlations, overlap-add); its three sums
end in matrix products, and those are a library's.  On an x86 CPU PyTorch hands float32
``mm`` to MKL, which on AMD processors runs its AVX2 code: on a Zen 5 (AVX-512) it
multiplied AlexNet conv2's columns at 174-192 GFLOP/s while oneDNN -- the library
PyTorch's own convolution runs on, which picks its code by the instructions the processor
has -- took the same products at 380-500 GFLOP/s (``benchmarks/layers.py`` and the README
give the layers' times).  So large float32 products on a CPU go to oneDNN's matrix product
(the operator ``torch.compile`` itself emits for a CPU ``linear``), and everything else --
float64, CUDA, small products whose cost is the call, a PyTorch without oneDNN, or
``CONVREPRO_ONEDNN=0`` -- to ``torch.mm``.
"""

from __future__ import annotations

import functools
import os

import torch

# Below this many multiply-adds a product costs its call, not its arithmetic (the 1989
# networks' layers): the plain ``mm`` path, which has the smaller call.
ONEDNN_FROM = 1 << 21


@functools.cache
def _onednn_linear():
    """oneDNN's ``linear`` (x @ w.T + b) when this PyTorch has it, else None."""
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


def onednn_wanted(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a @ b`` goes to oneDNN (see the module's docstring)."""
    return (a.shape[0] * a.shape[1] * b.shape[1] >= ONEDNN_FROM
            and a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32
            and torch.backends.mkldnn.enabled and os.environ.get("CONVREPRO_ONEDNN", "") != "0"
            and _onednn_linear() is not None)


def _plain(m: torch.Tensor) -> torch.Tensor:
    """``m`` as a row-major or column-major matrix: oneDNN takes any strides, but with others
    (a group's rows of a channels-last gradient) it took 4.8 s for a 2.1-ms product."""
    return m if m.is_contiguous() or m.t().is_contiguous() else m.contiguous()


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` (+ ``bias``, one per column) for 2-D ``a`` (M, K) and ``b`` (K, N): (M, N), contiguous."""
    if onednn_wanted(a, b):
        return _onednn_linear()(_plain(a), _plain(b).t(), bias, "none", [], "")
    return torch.mm(a, b) if bias is None else torch.addmm(bias, a, b)
