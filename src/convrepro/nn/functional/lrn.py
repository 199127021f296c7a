"""Local response normalisation, Krizhevsky et al. 2012, section 3.3, backward written out.

    b[i] = a[i] / (k + alpha * sum_{j = i - n//2}^{i + (n-1)//2} a[j]^2) ** beta

over neighbouring maps i (zero beyond the first and last map).  ``alpha`` is the paper's:
it is *not* divided by ``n`` (PyTorch's own ``local_response_norm`` divides it, so the
paper's 1e-4 is 5e-4 there).  For even ``n`` the window reaches one map further back than
forward, as in PyTorch.
"""

from __future__ import annotations

import torch

from . import _amp, _autograd


def _channel_window_sum(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """s[:, i] = sum_{j=i-before}^{i+after} t[:, j], with zeros beyond the edges."""
    c = t.shape[1]
    padded = t.new_zeros((t.shape[0], c + before + after, *t.shape[2:]))
    padded[:, before : before + c] = t
    s = padded[:, 0:c].clone()
    for o in range(1, before + after + 1):
        s += padded[:, o : o + c]
    return s


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """(b, saved) for ``x`` (N, C, ...): each map divided by its neighbours' energy."""
    before, after = size // 2, (size - 1) // 2
    scale = _channel_window_sum(x * x, before, after).mul_(alpha).add_(k)
    damping = scale.pow(-beta)  # kept for backward: the power is this layer's costliest operation
    out = x * damping
    return out, (x, out, scale, damping, (size, alpha, beta))


def lrn_backward(grad_out, saved, needs=(True,)):
    """(dL/da,), with d b_i / d a_j = delta_ij s_i^-beta - 2 alpha beta a_i a_j s_i^(-beta-1) [j in W(i)]."""
    x, out, scale, damping, (size, alpha, beta) = saved
    # Summing over i needs the transposed window: j in W(i) <=> i in W^T(j).
    t = grad_out * out / scale
    back = _channel_window_sum(t, (size - 1) // 2, size // 2)
    return (grad_out * damping - (2.0 * alpha * beta) * x * back,)


LocalResponseNormalisation = _autograd.function("LocalResponseNormalisation", lrn_forward, lrn_backward, 1)


def local_response_norm(
    x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> torch.Tensor:
    """AlexNet's LRN across maps of ``x`` (N, C, ...); defaults are the paper's."""
    if x.dim() < 3:
        raise ValueError(f"input must have rank >= 3 (N, C, ...), got shape {tuple(x.shape)}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    args = (int(size), float(alpha), float(beta), float(k))
    if _amp.autocast_dtype(x) is None and x.dtype not in (torch.float16, torch.bfloat16):
        return LocalResponseNormalisation.apply(x, *args)
    # Mixed precision: the sum of squares and the power in float32 (see _amp).
    with _amp.no_autocast(x):
        return LocalResponseNormalisation.apply(x.float(), *args).to(x.dtype)
