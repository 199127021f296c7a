"""Stochastic diagonal Levenberg-Marquardt (Becker & LeCun 1988; LeCun et al. 1998, appendix C).

Each weight k gets its own step eps / (mu + h_kk), with h_kk an estimate of the diagonal
Gauss-Newton second derivative of the loss.  It is obtained by back-propagating second
derivatives, which has the same form as back-propagating first derivatives with every
weight and every input squared:

    d2E/da_i^2 = f'(a_i)^2 * sum_k w_ki^2 d2E/da_k^2        (units)
    d2E/dw_ij^2 = d2E/da_i^2 * x_j^2, summed over the connections that share w_ij

For a convolutional layer the first sum is again a correlation, of d2E/da^2 with the
squared kernel, and the second the correlation of d2E/da^2 with the squared input, so the
hand-written layers' own backward computes both: the layer is run on squared inputs with
squared weights (and the square of its pad value), and autograd's backward of that linear
map, fed d2E/da^2, returns exactly the two sums.  Off-diagonal terms are dropped at every
layer, as in the paper ("diagonal approximation"); the estimate is exact for the output
layer and for any unit with a single path to the output.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from convrepro.models.activations import derivative


@contextmanager
def _squared_padding(module: nn.Module):
    convs = [m for m in module.modules() if hasattr(m, "pad_value")]
    saved = [m.pad_value for m in convs]
    try:
        for m in convs:
            m.pad_value = m.pad_value**2
        yield
    finally:
        for m, v in zip(convs, saved, strict=True):
            m.pad_value = v


def gauss_newton_diagonal(model: nn.Module, x: torch.Tensor, output_curvature) -> dict[nn.Parameter, torch.Tensor]:
    """Sum over the patterns in ``x`` of the diagonal second derivatives, for each parameter.

    ``model.stages()`` lists (layer, activation) pairs in order, each layer linear in its
    parameters and input; ``output_curvature(outputs)`` gives d2E/dy^2 of the loss.
    """
    stages = model.stages()
    inputs, pre = [], []
    with torch.no_grad():
        y = x
        for layer, act in stages:
            inputs.append(y)
            a = layer(y)
            pre.append(a)
            y = act(a)
        h_y = output_curvature(y)
    result: dict[nn.Parameter, torch.Tensor] = {}
    for (layer, act), y_in, a in zip(reversed(stages), reversed(inputs), reversed(pre), strict=True):
        h_a = derivative(act, a) ** 2 * h_y
        params = dict(layer.named_parameters())
        squared = {n: (p.detach() ** 2).requires_grad_(True) for n, p in params.items()}
        y2 = (y_in.detach() ** 2).requires_grad_(y_in is not x)
        with _squared_padding(layer):
            out2 = functional_call(layer, squared, (y2,))
        wanted = list(squared.values()) + ([y2] if y2.requires_grad else [])
        grads = torch.autograd.grad(out2, wanted, grad_outputs=h_a)
        for n, g in zip(squared, grads, strict=False):
            result[params[n]] = g
        if y2.requires_grad:
            h_y = grads[-1]
    return result


class SDLM(torch.optim.Optimizer):
    """Per-weight steps eps / (mu + h_kk); call :meth:`set_curvature` before each pass."""

    def __init__(self, params, lr: float = 0.0005, mu: float = 0.02):
        if lr <= 0 or mu <= 0:
            raise ValueError(f"SDLM needs lr > 0 and mu > 0, got lr={lr}, mu={mu}")
        super().__init__(params, dict(lr=lr, mu=mu))

    @torch.no_grad()
    def set_curvature(self, curvature: dict[nn.Parameter, torch.Tensor]) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                h = curvature[p]
                self.state[p]["h"] = h
                self.state[p]["step_size"] = group["lr"] / (group["mu"] + h)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            steps = [self.state[p]["step_size"] for p in params]
            torch._foreach_addcmul_(params, [p.grad for p in params], steps, value=-1.0)
        return loss

    @torch.no_grad()
    def apply(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """The per-pattern update without the Optimizer.step machinery (see the task)."""
        steps = [self.state[p]["step_size"] for p in params]
        torch._foreach_addcmul_(params, list(grads), steps, value=-1.0)
