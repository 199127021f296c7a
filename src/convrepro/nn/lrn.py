"""Local response normalisation module (Krizhevsky et al. 2012, section 3.3)."""

from __future__ import annotations

from torch import nn

from . import functional as lf


class LocalResponseNorm(nn.Module):
    """Defaults are the paper's: k = 2, n = 5, alpha = 1e-4 (not divided by n), beta = 0.75."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        return lf.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
