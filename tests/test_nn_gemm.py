"""The matrix products under the large convolution: oneDNN's or ``torch.mm``, the same sums."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convrepro.nn import functional as cf
from convrepro.nn.functional import _conv_large, _gemm

from .test_nn_contract import kernels_run_by

ONEDNN = _gemm._onednn_linear() is not None
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this PyTorch has no oneDNN matrix product")


def _layouts(m, k, n, g):
    """``a`` (m, k) and ``b`` (k, n) in the layouts the convolution hands over: contiguous,
    transposed, and rows of one group of a channels-last gradient (stride 2n, not n)."""
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    interleaved = torch.randn(m, 2, k, generator=g)[:, 0]
    return {"contiguous": (a, b), "a transposed": (a.t().contiguous().t(), b.t().contiguous().t()),
            "group rows": (interleaved, b)}


@needs_onednn
@pytest.mark.parametrize("layout", ["contiguous", "a transposed", "group rows"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_onednn_product_equals_mm_in_every_layout_it_is_given(layout, with_bias):
    g = torch.Generator().manual_seed(0)
    a, b = _layouts(512, 300, 40, g)[layout]
    bias = torch.randn(40, generator=g) if with_bias else None
    assert _gemm.onednn_wanted(a, b)
    got = _gemm.matmul(a, b, bias)
    exact = a.double() @ b.double() + (0 if bias is None else bias.double())
    assert got.shape == (512, 40) and got.is_contiguous()
    # float32 sums of 300 products: both libraries within a few ulps of the float64 sum
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got, torch.mm(a, b) if bias is None else torch.addmm(bias, a, b),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case,wanted", [
    ("large float32", True), ("small float32", False), ("large float64", False), ("switched off", False),
])
def test_which_products_go_to_onednn(case, wanted, monkeypatch):
    size = 64 if case.startswith("small") else 512
    dtype = torch.float64 if "float64" in case else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, 32, dtype=dtype)
    if case == "switched off":
        monkeypatch.setenv("CONVREPRO_ONEDNN", "0")
    assert _gemm.onednn_wanted(a, b) == (wanted and ONEDNN)
    torch.testing.assert_close(_gemm.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)


# AlexNet's conv2 scaled down: 5x5, two groups, padding 2; big enough for oneDNN (M*K*N >= 2^22).
SHAPES = dict(x=(6, 32, 16, 16), w=(32, 16, 5, 5), padding=2, groups=2)


def _conv_and_grads(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPES["x"], generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(SHAPES["w"], generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(SHAPES["w"][0], generator=g, dtype=dtype, requires_grad=True)
    grad = torch.randn(SHAPES["x"][0], SHAPES["w"][0], 16, 16, generator=g, dtype=dtype)
    ours = cf.conv2d(x, w, b, padding=SHAPES["padding"], groups=SHAPES["groups"])
    ref = F.conv2d(x, w.flip(-2, -1), b, padding=SHAPES["padding"], groups=SHAPES["groups"])
    return (ours, *torch.autograd.grad(ours, (x, w, b), grad)), (ref, *torch.autograd.grad(ref, (x, w, b), grad))


@pytest.mark.parametrize("onednn", ["1", "0"])
def test_large_convolution_in_float32_by_either_library_matches_pytorch(onednn, monkeypatch):
    monkeypatch.setenv("CONVREPRO_ONEDNN", onednn)
    ours, ref = _conv_and_grads(torch.float32)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    ops = kernels_run_by(lambda x, w: cf.conv2d(x, w, padding=2, groups=2), SHAPES["x"], SHAPES["w"])
    assert ("mkldnn::_linear_pointwise" in ops) == (onednn == "1" and ONEDNN)


@pytest.mark.parametrize("block_bytes", [1, 3 * 25 * 16 * 256 * 8, 1 << 30])
def test_input_gradient_made_in_blocks_of_images_equals_pytorchs(block_bytes, monkeypatch):
    """One image per block, blocks of 3 of the 6 (8-byte values), the whole batch: the same sums."""
    monkeypatch.setattr(_conv_large, "BLOCK_BYTES", block_bytes)
    ours, ref = _conv_and_grads(torch.float64)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_weight_gradient_rebuilds_its_columns_from_the_input_after_another_layer_overwrote_them():
    """The padded input and the columns are workspaces: a second convolution of the same
    shape overwrites both before the first one's backward, which must then use its own input."""
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(SHAPES["x"], generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.randn(SHAPES["w"], generator=g, dtype=torch.float64, requires_grad=True)
    first = cf.conv2d(x1, w, padding=2, groups=2)
    cf.conv2d(x2, w, padding=2, groups=2)  # same shapes: same workspaces
    (ours,) = torch.autograd.grad(first.sum(), w)
    (ref,) = torch.autograd.grad(F.conv2d(x1, w.flip(-2, -1), padding=2, groups=2).sum(), w)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
