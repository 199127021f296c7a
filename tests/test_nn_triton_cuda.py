"""The Triton kernels compiled for a real GPU, at the precisions training uses there.

Skipped without CUDA (the interpreter tests in ``test_nn_triton.py`` check the same kernels
in float32 on a CPU; the interpreter has no bfloat16).  Errors are ‖result − float64‖ /
‖float64‖ over output and gradients; the tolerances are the arithmetic's own: strict fp32
keeps 24 bits, TF32 and bfloat16 round the products' operands to 11 and 8 bits (relative
steps 2⁻¹¹ ≈ 5e-4 and 2⁻⁸ ≈ 4e-3) and accumulate in float32.  The kernels must also stay
within a small factor of cuDNN's own error with the same arithmetic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convrepro.nn import functional as cf

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on one: make bench-gpu)")

TOLERANCE = {"fp32": 1e-5, "tf32": 3e-3, "bf16": 2e-2}
# (input channels, size, maps, kernel, stride, padding, groups): AlexNet's conv1, conv2, conv4 at batch 4
CONVS = [(3, 227, 96, 11, 4, 0, 1), (96, 27, 256, 5, 1, 2, 2), (384, 13, 384, 3, 1, 1, 2)]


def _errors(fn, leaves, setting):
    torch.backends.cudnn.allow_tf32 = setting != "fp32"
    g = torch.Generator().manual_seed(2)
    leaves64 = [t.double().requires_grad_() for t in leaves]
    out64 = fn(*leaves64)
    grad = torch.randn(out64.shape, generator=g, dtype=torch.float64)
    grads64 = torch.autograd.grad(out64, leaves64, grad)
    cuda = [t.cuda().requires_grad_() for t in leaves]
    cuda[0] = cuda[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=setting == "bf16"):
        out = fn(*cuda)
    grads = torch.autograd.grad(out, cuda, grad.cuda().to(out.dtype))
    return [float((a.double().cpu() - r).norm() / r.norm())
            for a, r in zip((out, *grads), (out64, *grads64), strict=True)]


@pytest.mark.parametrize("setting", list(TOLERANCE))
@pytest.mark.parametrize("shape", CONVS, ids=["conv1", "conv2", "conv4"])
@pytest.mark.parametrize("weight_gradient", ["triton", "columns"])
def test_convolution_kernels_on_the_gpu(shape, setting, weight_gradient, monkeypatch):
    from convrepro.nn.functional import _triton_conv

    monkeypatch.setattr(_triton_conv, "WEIGHT_GRADIENT", weight_gradient)
    c, size, d, k, s, p, groups = shape
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(4, c, size, size, generator=g),
              torch.randn(d, c // groups, k, k, generator=g) / (c // groups * k * k) ** 0.5,
              torch.randn(d, generator=g)]
    ours = _errors(lambda x, w, b: cf.conv2d(x, w, b, stride=s, padding=p, groups=groups), leaves, setting)
    cudnn = _errors(lambda x, w, b: F.conv2d(x, w.flip(-2, -1), b, stride=s, padding=p, groups=groups),
                    leaves, setting)
    assert max(ours) < TOLERANCE[setting], (ours, cudnn)
    for mine, theirs in zip(ours, cudnn, strict=True):
        assert mine < 4 * theirs + 1e-6, (ours, cudnn)


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_max_pool_kernels_on_the_gpu(setting):
    x = torch.randn(4, 96, 55, 55, generator=torch.Generator().manual_seed(0)).relu()
    errors = _errors(lambda t: cf.max_pool2d(t, 3, 2), [x], setting)
    # A maximum is exact; only bfloat16's rounding of the input and the gradient remains.
    assert max(errors) < (1e-7 if setting == "fp32" else 1e-2), errors


def test_the_kernels_run_on_cuda():
    from convrepro.nn.functional._triton_conv import TritonConvolution2d
    from convrepro.nn.functional._triton_pool import TritonMaxPooling2d

    x = torch.randn(2, 3, 9, 9, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
    assert cf.conv2d(x, w).grad_fn.name() == TritonConvolution2d.__name__ + "Backward"
    assert cf.max_pool2d(x, 3, 2).grad_fn.name() == TritonMaxPooling2d.__name__ + "Backward"
