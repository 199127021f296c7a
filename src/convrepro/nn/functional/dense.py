"""The fully connected layer and the papers' squashing functions as forward/backward pairs,
for the on-line steps that chain every layer of a 1989 network by hand.

    dense:        z = W a + b          dL/da = W^T dL/dz,  dL/dW = dL/dz a^T,  dL/db = dL/dz
    scaled tanh:  f(z) = 1.7159 tanh(2z/3)  (LeCun)     f'(z) = 1.7159 (2/3) (1 - tanh^2(2z/3))
    logistic:     f(z) = 1 / (1 + e^-z)     (Waibel)    f'(z) = f(z) (1 - f(z))

The models' own ``torch.nn.Linear``, ``ScaledTanh`` and ``Sigmoid`` compute the same
forwards (``addmm``, ``tanh``, ``sigmoid``); autograd differentiates those.
"""

from __future__ import annotations

import torch

SCALE, SLOPE = 1.7159, 2.0 / 3.0
# The derivatives' own ATen operators (what autograd runs for tanh and sigmoid), bound once.
_TANH_BACKWARD, _SIGMOID_BACKWARD = torch.ops.aten.tanh_backward.default, torch.ops.aten.sigmoid_backward.default


def dense_forward(x, weight, bias):
    """z = x W^T + b for ``x`` (N, in), ``weight`` (out, in), as ``torch.nn.functional.linear``."""
    return torch.addmm(bias, x, weight.t()), (x, weight)


def dense_backward(grad_out, saved, needs=(True, True, True)):
    x, weight = saved
    return (grad_out @ weight if needs[0] else None, grad_out.t() @ x if needs[1] else None,
            grad_out.sum(0) if needs[2] else None)


def scaled_tanh_forward(z):
    t = torch.tanh(z * SLOPE)
    return t * SCALE, (t,)


def scaled_tanh_backward(grad_out, saved, needs=(True,)):
    (t,) = saved
    return (_TANH_BACKWARD(grad_out, t).mul_(SCALE * SLOPE),)  # g (1 - t^2), ATen's one op


def logistic_forward(z):
    s = torch.sigmoid(z)
    return s, (s,)


def logistic_backward(grad_out, saved, needs=(True,)):
    (s,) = saved
    return (_SIGMOID_BACKWARD(grad_out, s),)  # g (1 - s) s, ATen's one op
