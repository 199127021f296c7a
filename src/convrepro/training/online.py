"""The 1989 papers' on-line learning as the lecture writes back-propagation: for each pattern,
the layers' forwards in order, their backwards in reverse, then the update.

Every layer is a pair from ``convrepro.nn.functional`` -- the same functions the autograd
Functions wrap -- so no arithmetic of a layer lives here: only the order in which the
zip-code network and the time-delay network chain them.  One pattern at a time
(167,693 updates for LeCun's 23 passes, 51,760 for Waibel's 80) the cost is the number of
tensor operations, so the graph, the ``autograd.grad`` call and the per-step allocations of
the generic loop (``training.online_step=autograd``) are what this saves.  Both reach the
same weights to float64 rounding (``tests/test_online_steps.py``).

Used for the faithful recipes (``online_refusal`` says why another configuration keeps
the generic loop); ``update_rule`` applies the optimizer to each pattern's gradients, for both.
"""

from __future__ import annotations

import torch

from convrepro.models.activations import ScaledTanh
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.nn import functional as lf

from .sdlm import SDLM

_ACTIVATIONS = {ScaledTanh: (lf.scaled_tanh_forward, lf.scaled_tanh_backward),
                torch.nn.Sigmoid: (lf.logistic_forward, lf.logistic_backward)}
_NO_INPUT_GRADIENT = (False, True, True)  # the first layer: its input is the pattern


def online_refusal(model, loss, optimizer, patterns_per_update) -> str | None:
    """Why the chained pairs do not train this configuration (None: they do)."""
    if patterns_per_update != 1:
        return "not one update per pattern"
    if loss.name != "mse":
        return "not the MSE loss"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "not on a CPU"
    if type(optimizer) is torch.optim.SGD:
        group = optimizer.param_groups[0]
        if group["weight_decay"] or group["dampening"] or group["nesterov"] or group.get("maximize"):
            return "SGD with weight decay, dampening or Nesterov momentum"
    elif not isinstance(optimizer, SDLM):
        return "neither SGD nor SDLM"
    if isinstance(model, ZipCodeNet):
        acts = (model.act1, model.act2, model.act3, model.act_out)
        if not all(type(a) in _ACTIVATIONS for a in acts):
            return "a nonlinearity without a pair"
        if not isinstance(model.dropout, torch.nn.Identity) or model.h1.decimate or model.h2.decimate:
            return "dropout or decimation layers"
        return None
    if isinstance(model, TimeDelayNet):
        if not all(type(a) in _ACTIVATIONS for a in (model.act1, model.act2, model.output)):
            return "a nonlinearity without a pair"
        if model.output_bias is None:
            return "no output bias"
        for layer in (model.hidden1, model.hidden2):
            if layer.connection_table is not None or layer.bias_kind != "map" or layer.groups != 1:
                return "time-delay layers with a table or per-unit bias"
        return None
    return "neither the zip-code network nor the time-delay network"


def update_rule(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]):
    """``update(grads)``: the optimizer's rule applied to one pattern's gradients in a few fused
    ``foreach`` ops (its own ``step`` costs more than a small network's whole pattern)."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, SDLM):  # each weight's own step size
        return lambda grads: optimizer.apply(params, grads)
    if type(optimizer) is torch.optim.SGD and not (group["weight_decay"] or group["dampening"]
                                                   or group["nesterov"] or group.get("maximize")):
        if not group["momentum"]:
            @torch.no_grad()
            def sgd(grads):  # w <- w - lr g (lr read each time: schedulers change it)
                torch._foreach_add_(params, grads, alpha=-group["lr"])
            return sgd

        # The optimizer's state dict, each parameter's entry in it, and whether all hold a buffer.
        state_dict, state, primed = None, [], False

        @torch.no_grad()
        def momentum(grads):  # PyTorch's SGD: v <- mu v + g, w <- w - lr v (v in its state: checkpoints hold it),
            # but g + mu v rounded once (a fused multiply-add; SGD.step rounds mu v first): the
            # rounding the faithful TDNN's published numbers were measured with.
            nonlocal state_dict, state, primed
            if state_dict is not optimizer.state:  # (a loaded checkpoint replaces the state dict)
                state_dict, state = optimizer.state, [optimizer.state[p] for p in params]
                primed = all(s.get("momentum_buffer") is not None for s in state)
            if primed:
                torch._foreach_add_(grads, [s["momentum_buffer"] for s in state], alpha=group["momentum"])
            for s, v in zip(state, grads, strict=True):  # the fresh gradients become the buffers
                s["momentum_buffer"] = v
            primed = True
            torch._foreach_add_(params, grads, alpha=-group["lr"])
        return momentum

    def generic(grads):  # Adam...: the optimizer's own step
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
    return generic


def online_step(model):
    """The chain for ``model`` (see ``online_refusal``)."""
    return ZipCodeOnline(model) if isinstance(model, ZipCodeNet) else TimeDelayOnline(model)


class ZipCodeOnline:
    """LeCun et al.'s network, one pattern: H1 and H2 (convolutions at stride 2 in a frame of
    -1, one bias per unit; H2 through its connection table), H3 and the output (dense), the
    scaled tanh after each."""

    def __init__(self, model: ZipCodeNet):
        self.acts = [_ACTIVATIONS[type(a)] for a in (model.act1, model.act2, model.act3, model.act_out)]
        self.mask = model.h2.conv.connection_mask.to(model.h2.conv.weight.dtype)
        # The layers' tensors, fetched once (updates are in place; a loaded checkpoint copies into them).
        self.convs = [(m.conv.weight, m.bias, (m.conv.stride_tuple, m.conv.padding_tuple, m.conv.pad_value, 1))
                      for m in (model.h1, model.h2)]
        self.dense = [(d.weight, d.bias) for d in (model.h3, model.output)]

    def gradients(self, x: torch.Tensor, dloss) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(output, gradients in ``model.parameters()`` order) for one pattern ``x`` (1, 1, 16, 16);
        ``dloss(output)`` is the loss's gradient with respect to the output."""
        (f1, b1), (f2, b2), (f3, b3), (f4, b4) = self.acts
        (w1, bias1, geometry1), (w2, bias2, geometry2) = self.convs
        w2 = w2 * self.mask  # the table's connections; the others are not parameters
        # forward: each layer's pair, in order
        z1, conv1 = lf.conv2d_forward(x, w1, bias1, *geometry1)
        a1, act1 = f1(z1)
        z2, conv2 = lf.conv2d_forward(a1, w2, bias2, *geometry2)
        a2, act2 = f2(z2)
        z3, dense3 = lf.dense_forward(a2.reshape(1, -1), *self.dense[0])
        a3, act3 = f3(z3)
        z4, dense4 = lf.dense_forward(a3, *self.dense[1])
        y, act4 = f4(z4)
        # backward: the same layers in reverse, each passing dL/d(its input) down
        (g,) = b4(dloss(y), act4)
        g, gw4, gb4 = lf.dense_backward(g, dense4)
        (g,) = b3(g, act3)
        g, gw3, gb3 = lf.dense_backward(g, dense3)
        (g,) = b2(g.view_as(a2), act2)
        g, gw2, gb2 = lf.conv2d_backward(g, conv2)
        (g,) = b1(g, act1)
        _, gw1, gb1 = lf.conv2d_backward(g, conv1, _NO_INPUT_GRADIENT)
        return y, [gb1, gw1, gb2, gw2 * self.mask, gw3, gb3, gw4, gb4]


class TimeDelayOnline:
    """Waibel et al.'s TDNN, one token: two time-delay layers (1-D convolutions), the logistic
    after each, the integration over time, the output bias and the logistic output."""

    def __init__(self, model: TimeDelayNet):
        self.acts = [_ACTIVATIONS[type(a)] for a in (model.act1, model.act2, model.output)]
        self.mode = model.integrate.mode
        # The layers' tensors, fetched once (updates are in place; a loaded checkpoint copies into them).
        self.layers = [(c.weight, c.bias, c.stride_tuple[0], c.padding_tuple[0], c.pad_value)
                       for c in (model.hidden1, model.hidden2)]
        self.output_bias = model.output_bias
        # The paper averaged the gradients of a layer's time-shifted copies (13 and 9 of them):
        # hidden 1's weights and bias, then hidden 2's, divided in one foreach call by 0-dim
        # tensors of the weights' dtype (a Python number is converted each time).
        dtype = model.hidden1.weight.dtype
        self.copies = [torch.tensor(float(c), dtype=dtype) for c in model.steps for _ in ("weight", "bias")] \
            if model.average_shared_gradients else None

    def gradients(self, x: torch.Tensor, dloss) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(output, gradients in ``model.parameters()`` order) for one token ``x`` (1, C, T)."""
        (f1, b1), (f2, b2), (f3, b3) = self.acts
        layer1, layer2 = self.layers
        # forward
        z1, conv1 = lf.conv1d_forward(x, *layer1)
        h1, act1 = f1(z1)
        z2, conv2 = lf.conv1d_forward(h1, *layer2)
        h2, act2 = f2(z2)
        o, integration = lf.temporal_integration_forward(h2, self.mode)
        y, act3 = f3(o + self.output_bias)
        # backward
        (g,) = b3(dloss(y), act3)
        gb3 = g[0]  # the output bias: one pattern's gradient is its sum over the batch
        (g,) = lf.temporal_integration_backward(g, integration)
        (g,) = b2(g, act2)
        g, gw2, gb2 = lf.conv1d_backward(g, conv2)
        (g,) = b1(g, act1)
        _, gw1, gb1 = lf.conv1d_backward(g, conv1, _NO_INPUT_GRADIENT)
        if self.copies:
            torch._foreach_div_([gw1, gb1, gw2, gb2], self.copies)
        return y, [gb3, gw1, gb1, gw2, gb2]

