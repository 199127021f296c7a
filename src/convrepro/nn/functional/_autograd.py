"""The autograd Functions: each layer's forward/backward pair wrapped, nothing more.

``function(name, forward, backward, inputs)`` makes a ``torch.autograd.Function`` whose
forward is ``forward(*tensors, *options) -> (output, saved)`` and whose backward is
``backward(grad_output, saved, needs) -> gradients`` -- the same two functions the on-line
steps of the 1989 papers chain by hand.  Tensors in ``saved`` go through
``save_for_backward`` (autograd then checks that nobody changed them in between); anything
else in it (shapes, options, a reused workspace with its own check) is kept as it is.
"""

from __future__ import annotations

import torch
from torch.autograd import Function


def function(name: str, forward, backward, inputs: int) -> type[Function]:
    """The Function ``name`` over a pair whose first ``inputs`` arguments are the tensors
    that may need gradients; the rest are options."""

    def fwd(ctx, *args):
        out, saved = forward(*args)
        ctx.save_for_backward(*(s if isinstance(s, torch.Tensor) else None for s in saved))
        ctx.kept = tuple(None if isinstance(s, torch.Tensor) else s for s in saved)
        return out

    def bwd(ctx, grad_out):
        saved = tuple(k if t is None else t for t, k in zip(ctx.saved_tensors, ctx.kept, strict=True))
        grads = backward(grad_out, saved, ctx.needs_input_grad[:inputs])
        return (*grads, *(None,) * (len(ctx.needs_input_grad) - inputs))

    doc = f"{name}: autograd over ``{forward.__name__}`` / ``{backward.__name__}``."
    return type(name, (Function,), {"forward": staticmethod(fwd), "backward": staticmethod(bwd), "__doc__": doc})
