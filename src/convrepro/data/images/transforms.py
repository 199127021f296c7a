"""The paper's preprocessing and augmentation as torchvision v2 transforms on uint8 tensors."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2


class SubtractMean(nn.Module):
    """x - mean, with mean a (3, S, S) image (the paper) or (3, 1, 1) per channel."""

    def __init__(self, mean: torch.Tensor):
        super().__init__()
        self.mean = mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


class PCAColourNoise(nn.Module):
    """Add sum_i p_i alpha_i lambda_i to every pixel, alpha_i ~ N(0, std^2) drawn per image.

    "[p1, p2, p3][alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T" (section 4.1): p_i are the
    eigenvectors (columns) and lambda_i the eigenvalues of the RGB covariance of the training
    set.  The added colour therefore has covariance P diag(std^2 lambda^2) P^T.
    """

    def __init__(self, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float = 0.1):
        super().__init__()
        self.eigenvalues, self.eigenvectors, self.std = eigenvalues, eigenvectors, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return x
        alpha = torch.randn(3) * self.std
        shift = self.eigenvectors @ (alpha * self.eigenvalues)
        return x + shift.view(3, 1, 1).to(x.dtype)


def _base(size: int, mean: torch.Tensor) -> list:
    # The paper: rescale the shorter side to S, take the central S x S, subtract the mean.
    return [v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True),
            SubtractMean(mean)]


def train_transform(size: int, crop: int, mean: torch.Tensor, eigenvalues: torch.Tensor,
                    eigenvectors: torch.Tensor, pca_std: float, flip: bool = True) -> v2.Compose:
    steps = _base(size, mean) + [v2.RandomCrop(crop)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(PCAColourNoise(eigenvalues, eigenvectors, pca_std))
    return v2.Compose(steps)


def centre_transform(size: int, crop: int, mean: torch.Tensor) -> v2.Compose:
    return v2.Compose(_base(size, mean) + [v2.CenterCrop(crop)])


def ten_crop_transform(size: int, crop: int, mean: torch.Tensor) -> v2.Compose:
    """(10, 3, crop, crop): four corners and the centre, then their horizontal flips."""
    return v2.Compose(_base(size, mean) + [v2.TenCrop(crop), _Stack()])


class _Stack(nn.Module):
    def forward(self, crops):
        return torch.stack(list(crops))
