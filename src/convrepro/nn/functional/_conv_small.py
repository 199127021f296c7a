"""The convolution for small layers (LeCun's H1/H2, the TDNN): one gather, one product, one
scatter-add.

On-line learning runs ~170,000 forward/backward passes of single patterns through these
layers, where the cost is the number of tensor operations, not arithmetic.  So the whole
im2col -- padding with the frame value and the kernel flip included -- is one ``take`` with
a cached index, the output one product with the kernel in its own memory layout (one bias
per map or per unit riding in it), and the overlap-add of the input gradient one
``index_add_`` with the *same* index: reading a receptive field forward and summing
the shifted copies backward are each other's transposes.  (On a CPU only: the scatter-add
is not deterministic on a GPU, where small layers take ``_conv_large``.)

Row (c, i, j) of a pattern's (Cg*kh*kw, Ho*Wo) columns reads the input at offset
(kh-1-i, kw-1-j) of each receptive field, so that ``weight.view(D, -1) @ columns`` is
sum_k w[k] a[m - k]: the lecture's convolution, no flipped copy of the kernel.  Inputs,
outputs and gradients are (N, C, H, W) in row-major order, which ``take`` and ``index_add_``
read and write in any memory layout.  Shapes are passed to ``view`` as separate numbers:
a ``torch.Size`` argument is read element by element (1.9 against 0.9 us a call).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from ._amp import accumulator
from .sizes import output_size

# Below this many column entries (an 8 MB index) the gather path is used.
SMALL_COLUMNS = 1 << 20


class Plan(NamedTuple):
    """Everything a geometry fixes, made once: ``index`` gives each column entry's position in
    the row-major input (entries on the frame read slot N*C*H*W, the frame value), ``flat`` is
    it as one row, ``slots`` the input's size plus the frame's slot where there is a frame."""

    index: torch.Tensor
    flat: torch.Tensor
    out_shape: tuple
    in_shape: torch.Size
    weight_shape: torch.Size
    groups: int
    slots: int
    framed: bool


@functools.lru_cache(maxsize=64)
def plan(shape: torch.Size, kernel: torch.Size, stride: tuple, padding: tuple, groups: int, device: torch.device):
    """The ``Plan`` for an input of ``shape`` (N, C, H, W) or (N, C, T) and a kernel of ``kernel``.

    ``index`` is (G, Cg*kh*kw, N*Ho*Wo) -- every pattern's receptive fields side by side, so
    that a group's sums are one product over the batch -- or (Cg*kh*kw, Ho*Wo) for one pattern
    and one group, the columns' own shape."""
    n, c, *size = shape
    (h, w), (kh, kw) = (size, kernel[2:]) if len(size) == 2 else ((1, size[0]), (1, kernel[2]))
    (sh, sw), (ph, pw) = stride, padding
    ho, wo, cg = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw), c // groups

    def axis(size, dim):
        view = [1] * 7
        view[dim] = -1
        return torch.arange(size, device=device).view(view)

    b, g, ch, i, j = axis(n, 0), axis(groups, 1), axis(cg, 2), axis(kh, 3), axis(kw, 4)
    oh, ow = axis(ho, 5), axis(wo, 6)
    row = oh * sh + (kh - 1 - i) - ph  # the flip: kernel tap i meets input offset kh-1-i
    col = ow * sw + (kw - 1 - j) - pw
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
    flat = ((b * c + g * cg + ch) * h + row) * w + col
    index = torch.where(inside, flat, n * c * h * w).reshape(n, groups, cg * kh * kw, ho * wo)
    index = index[0, 0] if n == 1 and groups == 1 else index.permute(1, 2, 0, 3).reshape(groups, cg * kh * kw, -1)
    index = index.contiguous()
    out = (n, kernel[0], ho, wo) if len(size) == 2 else (n, kernel[0], wo)
    framed = bool(ph or pw)
    return Plan(index, index.view(-1), out, shape, kernel, groups, n * c * h * w + framed, framed)


def small_forward(x, weight, bias, stride, padding, pad_value, groups):
    """z = kernel @ columns + bias, the columns one gather of the framed input.  ``x`` is
    (N, C, H, W), or (N, C, T) for a time-delay layer (a height-one image: stride and
    padding are then (1, s) and (0, p))."""
    p = plan(x.shape, weight.shape, stride, padding, groups, x.device)
    source = torch.cat([x.reshape(-1), x.new_full((1,), pad_value)]) if p.framed else x
    cols = torch.take(source, p.index)
    d = p.out_shape[1]
    if p.index.dim() == 2:  # one pattern, one group (on-line learning): one product, the bias inside it
        kernel = weight.view(d, -1)
        out = torch.mm(kernel, cols) if bias is None else torch.addmm(bias.view(d, -1), kernel, cols)
    else:  # (G, Dg, N*M): one product per group for the whole batch, then (N, D, M)
        n, dg = p.out_shape[0], d // groups
        kernel = weight.view(groups, dg, -1)
        out = torch.bmm(kernel, cols).view(groups, dg, n, -1).permute(2, 0, 1, 3).reshape(n, d, -1)
        if bias is not None:
            out += bias.view(d, -1)
    return out.view(*p.out_shape), (cols, kernel, p, 0 if bias is None else bias.dim())


def small_backward(grad_out, saved, needs):
    """(dL/dx, dL/dw, dL/db): the two correlations as products with the columns' transposes."""
    cols, kernel, p, bias_dim = saved
    d, wshape, groups = grad_out.shape[1], p.weight_shape, p.groups
    grad_x = grad_w = grad_b = None
    if p.index.dim() == 2:
        g = grad_out.reshape(d, -1)
        dcols = torch.mm(kernel.t(), g) if needs[0] else None
        if needs[1]:
            grad_w = torch.mm(g, cols.t()).view(*wshape)
        if len(needs) > 2 and needs[2] and bias_dim:
            grad_b = g.sum(1) if bias_dim == 1 else g.view(d, *grad_out.shape[2:])
    else:
        n, dg = grad_out.shape[0], d // groups
        g = grad_out.reshape(n, groups, dg, -1).permute(1, 2, 0, 3).reshape(groups, dg, -1)  # (G, Dg, N*M)
        dcols = torch.bmm(kernel.transpose(1, 2), g) if needs[0] else None
        if needs[1]:
            grad_w = torch.bmm(g, cols.transpose(1, 2)).view(*wshape)
        if len(needs) > 2 and needs[2] and bias_dim:
            grad_b = g.sum(dim=2).view(d) if bias_dim == 1 else grad_out.sum(0)
    if dcols is not None:
        # Correlation with the kernel: dL/dz sent back through each receptive field, then
        # what lands on each input position summed (the frame's share is dropped).
        acc = accumulator(grad_out.dtype)  # half precision: the overlapping sums in float32
        grad_x = overlap_add(dcols, p) if acc == grad_out.dtype else overlap_add(dcols.to(acc), p).to(grad_out.dtype)
    return grad_x, grad_w, grad_b


def overlap_add(dcols: torch.Tensor, p: Plan) -> torch.Tensor:
    """What lands on each input position from the column gradient ``dcols`` (shaped like
    ``p.index``, which numbers the input's positions), summed: one ``index_add_``, the
    transpose of the forward's gather (5x faster than an accumulating ``put_`` for LeCun's H2
    at batch 64, 370 against 1,822 us, and faster for single patterns too).  The frame's share
    (the last slot, where ``p.framed``) is dropped: the frame is a constant."""
    total = dcols.new_zeros(p.slots).index_add_(0, p.flat, dcols.view(-1))
    return (total[:-1] if p.framed else total).view(*p.in_shape)
