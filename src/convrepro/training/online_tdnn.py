"""Waibel et al.'s on-line step written out: one token's forward pass, backward pass and
momentum update as about twenty tensor operations on buffers made once.

The same idea as ``online_zipcode.py``, for the time-delay network: the two time-delay
layers are the lecture's im2col products (index built once, kernel flip included; hidden
1's windows gathered for the whole loader batch), the output integrates hidden 2 over time
(a product with a vector of ones), and back-propagation is the transposed products and
the overlap-add.  Each layer's gradient is divided by its number of time-shifted copies
(13 and 9) when the model averages shared gradients, as the paper did; the update is
PyTorch's SGD with momentum (buffer = momentum * buffer + gradient; weight -= lr * buffer),
with the buffers kept in the optimizer's own state so that a checkpoint holds them and
either step can continue the other's run.
"""

from __future__ import annotations

import torch

from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.nn import TemporalIntegration
from convrepro.nn.functional._conv_small import map_major_index


def tdnn_refusal(model, loss, optimizer, patterns_per_update) -> str | None:
    """Why the written-out step does not apply (None: it does)."""
    if not isinstance(model, TimeDelayNet):
        return "not the time-delay network"
    if patterns_per_update != 1:
        return "not one update per pattern"
    if loss.name != "mse":
        return "not the MSE loss"
    if not all(isinstance(a, torch.nn.Sigmoid) for a in (model.act1, model.act2, model.output)):
        return "not logistic units throughout"
    if not isinstance(model.integrate, TemporalIntegration) or model.integrate.mode != "sum" \
            or model.output_bias is None:
        return "not a summed integration with an output bias"
    for layer in (model.hidden1, model.hidden2):
        if layer.connection_table is not None or layer.stride not in (1, (1,)) or layer.padding not in (0, (0,)) \
                or layer.groups != 1 or layer.bias_kind != "map":
            return "not plain time-delay layers"
    if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
        return "not plain SGD"
    group = optimizer.param_groups[0]
    if group["weight_decay"] or group["dampening"] or group["nesterov"] or group.get("maximize"):
        return "SGD with weight decay, dampening or Nesterov momentum"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "not on a CPU"
    return None


class TimeDelayOnlineStep:
    """Trains a :class:`TimeDelayNet` in place, one token at a time (SGD with momentum, MSE)."""

    def __init__(self, model: TimeDelayNet, optimizer: torch.optim.SGD):
        self.model, self.optimizer = model, optimizer
        w1, w2 = model.hidden1.weight, model.hidden2.weight
        dtype = w1.dtype
        self.units1, coefficients, delays1 = w1.shape
        self.units2, _, delays2 = w2.shape
        self.steps1, self.steps2 = model.steps
        frames = self.steps1 + delays1 - 1
        # the layers' own windows (a time-delay layer is a convolution on a height-one image)
        self.index1 = map_major_index(coefficients, 1, frames, 1, delays1)                # (48, 13)
        self.index2 = map_major_index(self.units1, 1, self.steps1, 1, delays2).flatten()  # (40 * 9,)
        empty = lambda *shape: torch.empty(*shape, dtype=dtype)  # noqa: E731
        self.z1, self.h1, self.s1, self.u1 = (empty(self.units1, self.steps1) for _ in range(4))
        self.cols2, self.d_cols2 = empty(self.units1 * delays2, self.steps2), empty(self.units1 * delays2, self.steps2)
        self.z2, self.h2, self.s2, self.u2 = (empty(self.units2, self.steps2) for _ in range(4))
        self.z3, self.s3, self.u3 = empty(self.units2), empty(self.units2), empty(self.units2)
        self.v1 = empty(self.units1 * self.steps1)
        self.ones1, self.ones = torch.ones(self.steps1, dtype=dtype), torch.ones(self.steps2, dtype=dtype)
        self.copies = (self.steps1, self.steps2) if model.average_shared_gradients else (1, 1)
        self.params = [w1, model.hidden1.bias, w2, model.hidden2.bias, model.output_bias]

    def _momentum_buffers(self) -> list[torch.Tensor]:
        """The optimizer's own buffers (made as PyTorch's SGD makes them at its first step)."""
        buffers = []
        for p in self.params:
            state = self.optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffers.append(state["momentum_buffer"])
        return buffers

    @torch.no_grad()
    def run(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Present the tokens ``x`` (B, coefficients, frames) in order, updating after each;
        returns each token's loss and outputs (before its own update, as the generic path)."""
        group = self.optimizer.param_groups[0]
        lr, mu = group["lr"], group["momentum"]
        n = len(x)
        cols1 = x.reshape(n, -1)[:, self.index1]  # (B, 48, 13): every hidden-1 window
        w1, b1, w2, b2, b3 = self.params
        w1v, w2v = w1.view(self.units1, -1), w2.view(self.units2, -1)
        m1, mb1, m2, mb2, mb3 = buffers = self._momentum_buffers()
        m1v, m2v = m1.view(self.units1, -1), m2.view(self.units2, -1)
        b1c, b2c = b1.view(-1, 1), b2.view(-1, 1)
        outputs = torch.empty(n, self.units2, dtype=x.dtype)
        errors = torch.empty_like(outputs)
        minus_targets = -targets
        z1, h1, s1, u1, cols2, d_cols2 = self.z1, self.h1, self.s1, self.u1, self.cols2, self.d_cols2
        z2, h2, s2, u2, z3, s3, u3, v1 = self.z2, self.h2, self.s2, self.u2, self.z3, self.s3, self.u3, self.v1
        index2, ones, ones1 = self.index2, self.ones, self.ones1
        cols2_flat, h1_flat = self.cols2.view(-1), self.h1.view(-1)
        k = 2.0 / self.units2  # d(mean squared error)/d(output) = 2 e / n
        copies1, copies2 = self.copies
        momentum = mu != 0
        for i in range(n):
            c1, y, e = cols1[i], outputs[i], errors[i]
            torch.addmm(b1c, w1v, c1, out=z1)
            torch.sigmoid(z1, out=h1)
            torch.index_select(h1_flat, 0, index2, out=cols2_flat)
            torch.addmm(b2c, w2v, cols2, out=z2)
            torch.sigmoid(z2, out=h2)
            torch.addmv(b3, h2, ones, out=z3)  # each output integrates its row over time
            torch.sigmoid(z3, out=y)
            # backward: u = (error passed down) * s'(z), s' = s (1 - s); the true delta is k * u
            torch.add(minus_targets[i], y, out=e)
            torch.addcmul(y, y, y, value=-1.0, out=s3)
            torch.mul(e, s3, out=u3)
            torch.addcmul(h2, h2, h2, value=-1.0, out=s2)
            torch.mul(s2, u3.view(-1, 1), out=u2)  # the integration copies each output's delta to every step
            torch.mm(w2v.t(), u2, out=d_cols2)
            v1.zero_()
            v1.index_add_(0, index2, d_cols2.view(-1))  # the overlap-add: back through the windows
            torch.addcmul(h1, h1, h1, value=-1.0, out=s1)
            torch.mul(v1.view_as(s1), s1, out=u1)
            # gradients into the momentum buffers: buffer = mu * buffer + gradient, in one op each
            beta = mu if momentum else 0.0
            m2v.addmm_(u2, cols2.t(), beta=beta, alpha=k / copies2)
            mb2.addmv_(u2, ones, beta=beta, alpha=k / copies2)
            m1v.addmm_(u1, c1.t(), beta=beta, alpha=k / copies1)
            mb1.addmv_(u1, ones1, beta=beta, alpha=k / copies1)
            mb3.mul_(beta).add_(u3, alpha=k)
            torch._foreach_add_(self.params, buffers, alpha=-lr)
        return errors.square().mean(1), outputs
