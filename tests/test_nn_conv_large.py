"""The large convolution's blocks of images: the same sums whatever the block, and each layer's
gradients from its own input when another layer of the same shape ran in between."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convrepro.nn import functional as cf
from convrepro.nn.functional import _conv_large

# AlexNet's conv2 scaled down: 5x5, two groups, padding 2; the large strategy's shapes.
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


# One image's columns: 16 x 16 positions, each a 5 x 5 x 32 receptive field of 8-byte values.
IMAGE_BYTES = 16 * 16 * 5 * 5 * 32 * 8


@pytest.mark.parametrize("block_bytes", [1, 3 * IMAGE_BYTES, 4 * IMAGE_BYTES, 1 << 30])
def test_input_gradient_made_in_blocks_of_images_equals_pytorchs(block_bytes, monkeypatch):
    """One image per block, blocks of 3 of the 6, blocks of 4 then 2 (the last block in the front
    of the one workspace), the whole batch: the same output and gradients."""
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
