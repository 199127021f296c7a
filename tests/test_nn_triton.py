"""The Triton kernels (the layers' GPU path) against PyTorch and the CPU path, run on this
machine's CPU by Triton's interpreter.  The interpreter computes in numpy: float32 here;
bfloat16 (which it lacks) and timing wait for a GPU (``make bench-gpu``)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

# Before Triton and any kernel are imported: every @triton.jit becomes an interpreted function.
os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton is not installed (it comes with PyTorch's CUDA builds)")

from convrepro.nn import functional as cf  # noqa: E402

from .test_nn_contract import path_of  # noqa: E402


@pytest.fixture(autouse=True)
def kernels_on_cpu(monkeypatch):
    monkeypatch.setenv("CONVREPRO_TRITON", "1")


def _grads(out, leaves, grad):
    return torch.autograd.grad(out, [t for t in leaves if t is not None and t.requires_grad], grad)


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 3, 11, 13), 3, 2),        # AlexNet's overlapping 3/2
    ((1, 2, 8, 8), 2, 2),          # tiling windows
    ((2, 2, 9, 7), (3, 2), (1, 3)),
    ((1, 1, 5, 5), 5, 1),
    ((1, 3, 1, 12), (1, 4), (1, 3)),  # a 1-D pool over time
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool_kernels_route_like_pytorch(shape, kernel, stride, layout):

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, shape, generator=g).float()  # many ties: the first maximum must win
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ours, ref = cf.max_pool2d(x, kernel, stride), F.max_pool2d(x, kernel, stride)
    assert path_of(ours) == "triton"
    assert torch.equal(ours, ref)
    # The output keeps the input's layout, as PyTorch's does (the next layer reads it).
    assert ours.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(ref.shape, generator=g)
    # Overlapping windows add their gradients in another order than PyTorch's: rounding only.
    torch.testing.assert_close(_grads(ours, [x], grad)[0], _grads(ref, [x], grad)[0], rtol=1e-6, atol=1e-6)


def test_max_pool_kernel_lets_nan_win_like_pytorch():
    x = torch.tensor([[[[1.0, float("nan"), 2.0, 0.0]]]], requires_grad=True)
    out = cf.max_pool2d(x, (1, 2))
    assert out.isnan().tolist() == [[[[True, False]]]]
    out.backward(torch.ones_like(out))
    assert x.grad.tolist() == [[[[0.0, 1.0, 1.0, 0.0]]]]  # the NaN itself gets the gradient


@pytest.mark.parametrize("case", [
    # (input, weight, stride, padding, pad_value, groups, bias) -- AlexNet's shapes, shrunk
    ((2, 3, 23, 23), (8, 3, 11, 11), 4, 2, 0.0, 1, True),   # conv1: big stride, padding
    ((2, 8, 7, 7), (12, 4, 5, 5), 1, 2, 0.0, 2, True),      # conv2: two groups
    ((1, 12, 5, 5), (16, 12, 3, 3), 1, 1, 0.0, 1, False),   # conv3 without bias
    ((3, 4, 6, 9), (5, 4, 3, 2), (2, 1), (1, 0), -1.0, 1, True),  # LeCun's frame value, odd shapes
    # From 16 maps per group the tap-ordered kernels run (forward and weight gradient by the
    # input's maps, input gradient by the output's):
    ((2, 32, 6, 6), (24, 16, 3, 3), 1, 1, 0.0, 2, True),    # two groups of 16; 12 maps out per group
    ((1, 20, 7, 7), (32, 20, 3, 3), 2, 1, -1.0, 1, True),   # a part-filled block of maps, stride, frame
    ((2, 16, 5, 5), (16, 16, 3, 3), 1, 1, -1.0, 1, False),  # every kernel tap-ordered, with the frame
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("weight_gradient", ["triton", "triton split", "columns"])
def test_convolution_kernel_matches_flipped_pytorch(case, layout, weight_gradient, monkeypatch):
    from convrepro.nn.functional import _triton_conv

    monkeypatch.setattr(_triton_conv, "WEIGHT_GRADIENT", weight_gradient.split()[0])
    if weight_gradient.endswith("split"):  # the sum over positions shared out, as on a GPU with idle multiprocessors
        monkeypatch.setattr(_triton_conv, "programs_wanted", lambda device: 64)
        monkeypatch.setitem(_triton_conv.CONFIGS, "weight_gradient", {**_triton_conv.CONFIGS["weight_gradient"],
                                                                       "BLOCK_M": 16})

    xs, ws, stride, padding, pad_value, groups, with_bias = case
    g = torch.Generator().manual_seed(1)
    x = torch.randn(xs, generator=g)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(ws, generator=g, requires_grad=True)
    b = torch.randn(ws[0], generator=g, requires_grad=True) if with_bias else None
    ours = cf.conv2d(x, w, b, stride=stride, padding=padding, pad_value=pad_value, groups=groups)
    assert path_of(ours) == "triton"
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    ref = F.conv2d(F.pad(x, (pw, pw, ph, ph), value=pad_value), w.flip(-2, -1), b, stride=stride, groups=groups)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    grad = torch.randn(ref.shape, generator=g)
    if layout == "channels_last":  # the next layer's gradient in the layout this one returned
        grad = grad.to(memory_format=torch.channels_last)
    for a, r in zip(_grads(ours, [x, w, b], grad), _grads(ref, [x, w, b], grad), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("dtype", "maps_per_group", "path"), [
    (torch.float32, 256, "columns"),  # TF32: the implicit product's strided operands are slow
    (torch.bfloat16, 256, "triton"), (torch.float16, 192, "triton"),
    (torch.bfloat16, 48, "columns"),  # conv2: 16-wide tiles of input maps
    (torch.bfloat16, 3, "columns"),
])
def test_the_weight_gradient_path_follows_precision_and_maps(dtype, maps_per_group, path, monkeypatch):
    from convrepro.nn.functional import _triton_conv

    x = torch.empty(1, maps_per_group, 4, 4, dtype=dtype)
    assert _triton_conv._weight_gradient_path(x, maps_per_group) == path
    monkeypatch.setattr(_triton_conv, "WEIGHT_GRADIENT", "columns")  # forced, as the benchmark compares them
    assert _triton_conv._weight_gradient_path(x, maps_per_group) == "columns"


def test_paths_the_kernels_do_not_cover_stay_on_tensor_ops():

    x = torch.randn(1, 12, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 12, 5, 5, dtype=torch.float64, requires_grad=True)
    # float64, and LeCun's one bias per unit: the tensor-op path
    assert path_of(cf.conv2d(x, w, stride=2, padding=2)) == "small"
    per_unit = torch.randn(12, 4, 4, requires_grad=True)
    out = cf.conv2d(x.float(), w.float(), per_unit, stride=2, padding=2)
    assert path_of(out) == "small"


def test_without_the_switch_a_cpu_tensor_never_reaches_a_kernel(monkeypatch):
    monkeypatch.delenv("CONVREPRO_TRITON")
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    assert path_of(cf.max_pool2d(x, 3, 2)) == "tensor ops"


@pytest.mark.parametrize("path", ["conv", "conv strided", "pool", "conv triton"])
def test_no_pytorch_convolution_or_pooling_kernel_runs_on_the_triton_path(path, monkeypatch):
    from convrepro.nn.functional import _triton_conv

    from .test_nn_contract import FORBIDDEN_OPS, kernels_run_by

    if path == "conv triton":  # the implicit weight gradient, which "auto" picks only for 16-bit operands
        monkeypatch.setattr(_triton_conv, "WEIGHT_GRADIENT", "triton")
    fn, *shapes = {
        "conv strided": (lambda x, w: cf.conv2d(x, w, stride=2), (1, 3, 9, 9), (4, 3, 3, 3)),
        "pool": (lambda x: cf.max_pool2d(x, 3, 2), (2, 3, 9, 9)),
    }.get(path, (lambda x, w: cf.conv2d(x, w, padding=1, groups=2), (2, 4, 6, 6), (6, 2, 3, 3)))
    names = kernels_run_by(fn, *shapes)
    assert not {n for n in names if FORBIDDEN_OPS.search(n)}, sorted(names)


def test_the_switch_picks_the_layers_whose_kernels_run(monkeypatch):

    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    monkeypatch.setenv("CONVREPRO_TRITON", "pool")
    assert path_of(cf.max_pool2d(x, 3, 2)) == "triton"
    assert path_of(cf.conv2d(x, w)) == "small"
    monkeypatch.setenv("CONVREPRO_TRITON", "conv")
    assert path_of(cf.max_pool2d(x, 3, 2)) == "tensor ops"
    assert path_of(cf.conv2d(x, w)) == "triton"
