"""LeCun et al.'s on-line step written out: one pattern's forward pass, backward pass and
weight update as about thirty tensor operations on buffers made once.

On-line learning (167,693 single-pattern updates for the faithful run) is bound by the cost
of each operation's dispatch, not by its arithmetic: the generic step (the layers' autograd
Functions, ``autograd.grad``, a fused update) spends most of its time building and walking
the autograd graph and allocating small tensors.  The layers' derivatives are already
written out in ``convrepro.nn``; here they are unrolled for the zip-code network with
nothing left to decide per pattern:

* the convolutions are the lecture's im2col product, with the gather index built once.
  The index already holds the kernel flip (a convolution, not a correlation), the frame of
  background (-1) and the layout, so the stored weight tensors are used as they are (views,
  no copies); H1's input columns are gathered for the whole loader batch at once;
* the scaled tanh 1.7159 tanh(2x/3) is folded into the products' ``alpha``/``beta``: the
  buffers hold tanh values and the factors 1.7159 and 2/3 ride on the next multiply;
* back-propagation is the chain of transposed products and the overlap-add (``index_add_``
  with the same index) the lecture derives; each weight update is fused into the product
  that forms its gradient (``addmm_``/``addr_``), after that layer's error was passed down.

The result is the generic path's arithmetic in another order (equal to float64 rounding:
``tests/test_online_steps.py``).  Used for the faithful recipe's plain SGD and for SDLM; every
other configuration keeps the generic path (``zipcode_refusal`` says why).
"""

from __future__ import annotations

import torch

from convrepro.models.activations import ScaledTanh
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.nn.functional._conv_small import map_major_index

from .sdlm import SDLM

SCALE, SLOPE = 1.7159, 2.0 / 3.0  # ScaledTanh: SCALE * tanh(SLOPE * x)


def zipcode_refusal(model, loss, optimizer, patterns_per_update) -> str | None:
    """Why the written-out step does not apply (None: it does)."""
    if not isinstance(model, ZipCodeNet):
        return "not the zip-code network"
    if patterns_per_update != 1:
        return "not one update per pattern"
    if loss.name != "mse":
        return "not the MSE loss"
    acts = (model.act1, model.act2, model.act3, model.act_out)
    if not all(isinstance(a, ScaledTanh) for a in acts):
        return "not the scaled tanh throughout"
    if not isinstance(model.dropout, torch.nn.Identity) or model.h1.decimate or model.h2.decimate:
        return "dropout or decimation layers"
    for layer in (model.h1.conv, model.h2.conv):
        if tuple(layer.kernel_size) != (5, 5) or layer.stride not in (2, (2, 2)) \
                or layer.padding not in (2, (2, 2)) or layer.pad_value != -1:
            return "not the paper's 5x5 kernels at stride 2 in a frame of -1"
    if type(optimizer) not in (torch.optim.SGD, SDLM) or len(optimizer.param_groups) != 1:
        return "not plain SGD or SDLM"
    group = optimizer.param_groups[0]
    if type(optimizer) is torch.optim.SGD and (group["momentum"] or group["weight_decay"] or group.get("maximize")):
        return "SGD with momentum or weight decay"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "not on a CPU"
    return None


class ZipCodeOnlineStep:
    """Trains a :class:`ZipCodeNet` in place, one pattern at a time (MSE, scaled tanh), by plain
    SGD (each update fused into the product that forms its gradient) or by SDLM (the gradients
    formed into buffers, then every weight's own step size applied in one ``foreach`` op)."""

    def __init__(self, model: ZipCodeNet, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.sdlm = isinstance(optimizer, SDLM)
        w1, w2 = model.h1.conv.weight, model.h2.conv.weight
        dtype = w1.dtype
        self.maps1, self.maps2 = w1.shape[0], w2.shape[0]
        # the layers' own receptive fields (kernel flip, frame of -1): H1 on 16x16, H2 on 8x8
        self.index1 = map_major_index(w1.shape[1], 16, 16, 5, 5, 2, 2)                # (25, 64)
        self.index2 = map_major_index(w2.shape[1], 8, 8, 5, 5, 2, 2).flatten()       # (300 * 16,)
        frame = -1.0  # the background every H1 and H2 map is framed with
        empty = lambda *shape: torch.empty(*shape, dtype=dtype)  # noqa: E731
        # H1's tanh values and, last, the frame in the same units (the 1.7159 rides on H2's product)
        self.a1 = torch.full((self.maps1 * 64 + 1,), frame / SCALE, dtype=dtype)
        self.t1 = self.a1[:-1].view(self.maps1, 64)
        self.cols2 = empty(w2.shape[1] * 25, 16)
        self.z1, self.s1, self.u1 = empty(self.maps1, 64), empty(self.maps1, 64), empty(self.maps1, 64)
        self.z2, self.t2, self.s2, self.u2 = (empty(self.maps2, 16) for _ in range(4))
        self.d_cols2 = empty(w2.shape[1] * 25, 16)
        self.v1 = empty(self.maps1 * 64 + 1)
        n3, n4 = model.h3.out_features, model.output.out_features
        self.z3, self.t3, self.s3, self.u3 = (empty(n3) for _ in range(4))
        self.v2 = empty(model.h3.in_features)
        self.z4, self.s4, self.u4, self.v3 = empty(n4), empty(n4), empty(n4), empty(n3)
        self.one = torch.ones((), dtype=dtype)
        self.mask2 = model.h2.conv.connection_mask.to(dtype).expand_as(w2).reshape(self.maps2, -1).contiguous()
        # d(mean squared error)/d(output) = 2 e / n; each layer down multiplies by 1.7159 * 2/3
        self.k4 = 2.0 / n4 * SCALE * SLOPE
        self.k3 = self.k4 * SCALE * SLOPE
        self.k2 = self.k3 * SCALE * SLOPE
        self.k1 = self.k2 * SCALE * SLOPE

    @torch.no_grad()
    def run(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Present ``x`` (B, 1, 16, 16) in order, updating after each pattern; returns each
        pattern's loss and outputs (computed before its own update, as the generic path)."""
        lr = self.optimizer.param_groups[0]["lr"]  # read per loader batch: schedulers change it
        m = self.model
        n = len(x)
        frame = torch.full((n, 1), -1.0, dtype=x.dtype)
        cols1 = torch.cat([x.reshape(n, -1), frame], 1)[:, self.index1]   # (B, 25, 64): every H1 window
        w1, b1 = m.h1.conv.weight.view(self.maps1, -1), m.h1.bias.view(self.maps1, -1)
        w2_param = m.h2.conv.weight.view(self.maps2, -1)
        w2 = w2_param * self.mask2  # the table's weights; the others stay as they are in the model
        b2 = m.h2.bias.view(self.maps2, -1)
        w3, b3, w4, b4 = m.h3.weight, m.h3.bias, m.output.weight, m.output.bias
        params = [w1, b1, w2, b2, w3, b3, w4, b4]
        if self.sdlm:  # each weight's own step size (re-estimated by the task before each pass)
            originals = (m.h1.conv.weight, m.h1.bias, m.h2.conv.weight, m.h2.bias, w3, b3, w4, b4)
            steps = [self.optimizer.state[p]["step_size"].reshape(q.shape)
                     for p, q in zip(originals, params, strict=True)]
            grads = [torch.empty_like(p) for p in params]
            g1, gb1, g2, gb2, g3, gb3, g4, gb4 = grads
        t4s = torch.empty(n, w4.shape[0], dtype=x.dtype)
        errors = torch.empty_like(t4s)
        minus_targets = -targets
        t1, a1, cols2, t2, t2flat, t3 = self.t1, self.a1, self.cols2, self.t2, self.t2.view(-1), self.t3
        z1, z2, z3, z4 = self.z1, self.z2, self.z3, self.z4
        s1, s2, s3, s4 = self.s1, self.s2, self.s3, self.s4
        u1, u2, u3, u4, v1, v2, v3 = self.u1, self.u2, self.u3, self.u4, self.v1, self.v2, self.v3
        d_cols2, index2, mask2, one = self.d_cols2, self.index2, self.mask2, self.one
        g, a = SLOPE, SCALE
        k4, k3, k2, k1 = self.k4, self.k3, self.k2, self.k1
        cols2_flat = cols2.view(-1)
        v1_units = v1[:-1].view(self.maps1, 64)
        for i in range(n):
            c1, t4, e = cols1[i], t4s[i], errors[i]
            # forward: each tanh's argument is 2/3 (W a + b), with a = 1.7159 t from the layer below
            torch.addmm(b1, w1, c1, beta=g, alpha=g, out=z1)
            torch.tanh(z1, out=t1)
            torch.index_select(a1, 0, index2, out=cols2_flat)
            torch.addmm(b2, w2, cols2, beta=g, alpha=g * a, out=z2)
            torch.tanh(z2, out=t2)
            torch.addmv(b3, w3, t2flat, beta=g, alpha=g * a, out=z3)
            torch.tanh(z3, out=t3)
            torch.addmv(b4, w4, t3, beta=g, alpha=g * a, out=z4)
            torch.tanh(z4, out=t4)
            # backward, through the weights before this pattern's update:
            # u = (error passed down) * (1 - t^2); the true delta is k * u
            torch.add(minus_targets[i], t4, alpha=a, out=e)
            torch.addcmul(one, t4, t4, value=-1.0, out=s4)
            torch.mul(e, s4, out=u4)
            torch.mv(w4.t(), u4, out=v3)
            torch.addcmul(one, t3, t3, value=-1.0, out=s3)
            torch.mul(v3, s3, out=u3)
            torch.mv(w3.t(), u3, out=v2)
            torch.addcmul(one, t2, t2, value=-1.0, out=s2)
            torch.mul(v2.view_as(s2), s2, out=u2)
            torch.mm(w2.t(), u2, out=d_cols2)
            v1.zero_()
            v1.index_add_(0, index2, d_cols2.view(-1))  # the overlap-add: back through the windows
            torch.addcmul(one, t1, t1, value=-1.0, out=s1)
            torch.mul(v1_units, s1, out=u1)
            # each gradient is k * u times the layer's input (1.7159 t above H1, the pixels at H1)
            if self.sdlm:
                torch.outer(u4, t3, out=g4).mul_(k4 * a)
                torch.mul(u4, k4, out=gb4)
                torch.outer(u3, t2flat, out=g3).mul_(k3 * a)
                torch.mul(u3, k3, out=gb3)
                torch.mm(u2, cols2.t(), out=g2).mul_(k2 * a)
                torch.mul(u2, k2, out=gb2)
                torch.mm(u1, c1.t(), out=g1).mul_(k1)
                torch.mul(u1, k1, out=gb1)
                torch._foreach_addcmul_(params, grads, steps, value=-1.0)
            else:  # plain SGD: each update fused into the product that forms its gradient
                w4.addr_(u4, t3, alpha=-lr * k4 * a)
                b4.add_(u4, alpha=-lr * k4)
                w3.addr_(u3, t2flat, alpha=-lr * k3 * a)
                b3.add_(u3, alpha=-lr * k3)
                w2.addmm_(u2, cols2.t(), alpha=-lr * k2 * a)
                b2.add_(u2, alpha=-lr * k2)
                w1.addmm_(u1, c1.t(), alpha=-lr * k1)
                b1.add_(u1, alpha=-lr * k1)
            w2.mul_(mask2)
        keep = self.mask2.bool()
        w2_param.copy_(torch.where(keep, w2, w2_param))
        return errors.square().mean(1), t4s.mul_(a)
