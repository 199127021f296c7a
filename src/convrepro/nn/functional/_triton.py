"""Whether a layer runs its Triton kernel (``_triton_*.py``) instead of its tensor-op path.

Triton ships with the CUDA builds of PyTorch; the kernels are written out like the CPU
paths (forward a convolution or a maximum, backward its correlation or routing), one
program per block of outputs.  They run on CUDA tensors when Triton imports; nowhere
else, so an install without Triton, or a CPU, is unchanged.

``CONVREPRO_TRITON=0`` keeps CUDA on the tensor-op path (to compare the two);
``CONVREPRO_TRITON=pool`` (or ``conv``) runs only that layer's kernels;
``CONVREPRO_TRITON=1`` sends CPU tensors to the kernels too, which only works under
Triton's interpreter (``TRITON_INTERPRET=1``, set before the kernels are imported): that
is how the tests check the kernels without a GPU.  The kernels use only Triton's built-in
operations (``tl.full``, not the library's ``tl.zeros``): a library function compiled when
Triton was first imported without the interpreter cannot run inside an interpreted kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch


@functools.cache
def available() -> bool:
    """Whether Triton is installed (it comes with PyTorch's CUDA builds)."""
    return importlib.util.find_spec("triton") is not None


LAYERS = ("conv", "pool")


def wanted(x: torch.Tensor, layer: str) -> bool:
    """Whether ``layer`` ("conv" or "pool") runs its Triton kernels on ``x``."""
    switch = os.environ.get("CONVREPRO_TRITON", "")
    if switch == "0" or layer not in (LAYERS if switch in ("", "1") else switch.split(",")):
        return False
    if x.is_cuda:
        return available()
    return switch != "" and available() and os.environ.get("TRITON_INTERPRET") == "1"
