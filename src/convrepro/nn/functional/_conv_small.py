"""The convolution for small layers (LeCun's H1/H2, the TDNN): one gather, one scatter-add
(for a batch, a second gather).

On-line learning runs ~170,000 forward/backward passes of single patterns through these
layers, where the cost is the number of tensor operations, not arithmetic.  A time-delay
layer is this convolution on a height-one image.  So the whole
im2col -- padding with the frame value and the kernel flip included -- is one gather with
a cached index, and the overlap-add of the input gradient is one accumulating ``put_`` with
the *same* index -- or, for a batch, a gather with that index turned around (``_columns``):
reading a receptive field forward and summing the shifted copies backward are each
other's transposes.

Column (c, i, j) of a row reads the input at offset (kh-1-i, kw-1-j) of the receptive
field, so that ``columns @ weight.view(D, -1).T`` is sum_k w[k] a[m - k]: the lecture's
convolution, with the weight used in its own memory layout (no flipped copy).
"""

from __future__ import annotations

import functools
import math

import torch

from ._amp import accumulator
from ._columns import bias_gradient, output_from_columns, overlap_add, readers
from ._gemm import matmul
from .sizes import output_size

# Below this many column entries (an 8 MB index) the gather path is used.
SMALL_COLUMNS = 1 << 20


@functools.lru_cache(maxsize=64)
def gather_index(shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
                 groups: int, device: torch.device) -> torch.Tensor:
    """(G, N*Ho*Wo, Cg*kh*kw) positions in the flat channels-last input; the frame reads slot N*H*W*C."""
    n, c, h, w = shape
    ho, wo, cg = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw), c // groups

    def axis(values, dim):
        view = [1] * 7
        view[dim] = -1
        return values.view(view)

    a = functools.partial(torch.arange, device=device)
    g, b, oh, ow = axis(a(groups), 0), axis(a(n), 1), axis(a(ho), 2), axis(a(wo), 3)
    ch, i, j = axis(a(cg), 4), axis(a(kh), 5), axis(a(kw), 6)
    row = oh * sh + (kh - 1 - i) - ph  # the flip: kernel tap i meets input offset kh-1-i
    col = ow * sw + (kw - 1 - j) - pw
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    flat = ((b * h + row) * w + col) * c + g * cg + ch
    index = torch.where(inside, flat, n * h * w * c)
    return index.reshape(groups, n * ho * wo, cg * kh * kw).contiguous()


@functools.lru_cache(maxsize=64)
def readers_index(shape: tuple[int, int, int, int], kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
                  groups: int, device: torch.device) -> torch.Tensor:
    """``gather_index`` turned around: for each input position, the column entries that read it."""
    return readers(gather_index(shape, kh, kw, sh, sw, ph, pw, groups, device), math.prod(shape))


def small_forward(x, weight, bias, stride, padding, pad_value, groups):
    """z = columns @ kernel + bias, the columns one gather of the framed input."""
    n, c, h, w = x.shape
    d, cg, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    index = gather_index((n, c, h, w), kh, kw, sh, sw, ph, pw, groups, x.device)
    source = x.permute(0, 2, 3, 1).reshape(-1)
    if ph or pw:  # the frame's value, read at slot N*H*W*C
        source = torch.cat([source, x.new_full((1,), pad_value)])
    cols = source.index_select(0, index.view(-1)).view(index.shape)  # (G, M, Cg*kh*kw)
    kernel = weight.view(groups, d // groups, cg * kh * kw)
    out = output_from_columns(cols, kernel.transpose(1, 2), bias, n, ho, wo)
    bias_dim = 0 if bias is None else bias.dim()
    return out, (cols, kernel, index, (x.shape, weight.shape, groups, bias_dim, (kh, kw, sh, sw, ph, pw)))


def small_backward(grad_out, saved, needs):
    """(dL/dx, dL/dw, dL/db): the two correlations as products with the columns' transposes."""
    cols, kernel, index, ((n, c, h, w), wshape, groups, bias_dim, window) = saved
    d = wshape[0]
    ho, wo = grad_out.shape[-2:]
    g = grad_out.permute(0, 2, 3, 1).reshape(n * ho * wo, groups, d // groups).transpose(0, 1)
    grad_x = grad_w = grad_b = None
    if needs[0]:
        # Correlation with the kernel: send dL/dz back through each receptive field,
        # then sum what lands on each input position (the frame's share is dropped).
        dcols = matmul(g[0], kernel[0]) if groups == 1 else torch.bmm(g, kernel)
        acc = accumulator(grad_out.dtype)
        grad_x = overlap_add(dcols.to(acc), index, (n, h, w, c),
                             lambda: readers_index((n, c, h, w), *window, groups, grad_out.device))
        grad_x = grad_x.permute(0, 3, 1, 2).to(grad_out.dtype)
    if needs[1]:
        # Correlation of dL/dz with the input: already in the weight's own layout.
        grad_w = (matmul(g[0].t(), cols[0]) if groups == 1 else torch.bmm(g.transpose(1, 2), cols)).view(wshape)
    if len(needs) > 2 and needs[2] and bias_dim:
        grad_b = bias_gradient(grad_out, bias_dim)
    return grad_x, grad_w, grad_b
