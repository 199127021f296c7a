"""Losses by the papers' names: MSE against fixed targets (1989) or cross-entropy (2012)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "cross_entropy")


class ClassificationLoss:
    """``mse``: mean squared error between the outputs and targets that are ``target_high``
    for the true class and ``target_low`` for the others (LeCun: +-1; Waibel: 1/0).
    ``cross_entropy``: softmax cross-entropy on the outputs taken as logits.
    """

    def __init__(self, name: str = "mse", target_low: float = -1.0, target_high: float = 1.0,
                 num_classes: int = 10):
        if name not in LOSSES:
            raise ValueError(f"loss.name must be one of {LOSSES}, got {name!r}")
        self.name, self.low, self.high, self.num_classes = name, target_low, target_high, num_classes
        self._scales: dict = {}

    def targets(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = torch.full((len(labels), self.num_classes), self.low, dtype=like.dtype, device=like.device)
        return t.scatter_(1, labels.view(-1, 1), self.high)

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.against(outputs, self.prepare(labels, outputs))

    def prepare(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """What :meth:`against` compares with: target vectors (MSE) or the labels (CE).

        Made once per loader batch, so on-line learning slices it instead of building a
        target vector for every pattern.
        """
        return self.targets(labels, like) if self.name == "mse" else labels

    def against(self, outputs: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        if self.name == "mse":
            return F.mse_loss(outputs, prepared)
        return F.cross_entropy(outputs, prepared)

    def per_pattern(self, outputs: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        """Each pattern's MSE (the on-line steps' losses, one op for a loader batch)."""
        return (outputs - prepared).square().mean(1)

    def gradient(self, outputs: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        """dE/dy of the MSE for one pattern: 2 (y - t) / n (the on-line steps' start of backward)."""
        key = (outputs.numel(), outputs.dtype, outputs.device)
        scale = self._scales.get(key)
        if scale is None:  # a 0-dim tensor: a Python number would be converted at every pattern
            scale = self._scales[key] = torch.tensor(2.0 / key[0], dtype=key[1], device=key[2])
        return (outputs - prepared).mul_(scale)

    def mse(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE against the targets, whatever the training loss (the paper's second measure)."""
        return F.mse_loss(outputs, self.targets(labels, outputs))

    def output_curvature(self, outputs: torch.Tensor) -> torch.Tensor:
        """Gauss-Newton d2E/dy_k^2 of one pattern's loss with respect to each output (SDLM)."""
        if self.name == "mse":
            return torch.full_like(outputs, 2.0 / outputs.shape[1])
        p = torch.softmax(outputs, dim=1)
        return p * (1 - p)
