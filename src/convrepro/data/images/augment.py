"""The paper's augmentation on whole uint8 batches, on the device the model trains on.

Input: (B, 3, S, S) uint8, the stored 256 x 256 images (section 2).  Training: a random
C x C crop per image, a horizontal reflection with probability 1/2, then float32, minus
the mean image (cropped and reflected with it), plus PCA colour noise (section 4.1).
Evaluation: the centre crop, or the ten crops of the paper's test (four corners and the
centre, and their reflections), minus the mean image.  Random draws use the global
generator of the batch's device, which ``seed_everything`` seeds: a run is repeatable.

Pixel scale: ``raw`` keeps the paper's "(centered) raw RGB values" (0-255 minus the mean);
``unit`` divides by 255 first (the [0, 1] scale that He-initialised variants expect).
"""

from __future__ import annotations

import torch

SCALES = {"raw": 1.0, "unit": 1.0 / 255.0}


def crop_indices(batch: int, size: int, crop: int, flip: bool, device) -> tuple[torch.Tensor, ...]:
    """Per image: top, left, reflected, and the flat (C*C) positions of its crop in an S x S plane."""
    top = torch.randint(0, size - crop + 1, (batch,), device=device)
    left = torch.randint(0, size - crop + 1, (batch,), device=device)
    reflected = (torch.rand(batch, device=device) < 0.5) if flip else torch.zeros(batch, dtype=torch.bool,
                                                                                  device=device)
    steps = torch.arange(crop, device=device)
    rows = top[:, None] + steps                                                   # (B, C)
    cols = left[:, None] + torch.where(reflected[:, None], crop - 1 - steps, steps)  # reflected: right to left
    flat = rows[:, :, None] * size + cols[:, None, :]                            # (B, C, C)
    return top, left, reflected, flat.view(batch, 1, crop * crop)


def _gather(planes: torch.Tensor, flat: torch.Tensor, crop: int) -> torch.Tensor:
    """planes (B, 3, S, S), flat (B, 1, C*C) -> (B, 3, C, C)."""
    b, c = planes.shape[:2]
    return planes.reshape(b, c, -1).gather(2, flat.expand(b, c, -1)).view(b, c, crop, crop)


def pca_shift(batch: int, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float,
              scale: float, device) -> torch.Tensor:
    """(B, 3): sum_i p_i alpha_i lambda_i per image, alpha_i ~ N(0, std^2) (section 4.1).

    lambda are the eigenvalues of the RGB covariance on the [0, 1] scale, as the paper's
    re-implementations use them; the colour is then expressed in the run's pixel units
    (x 255 for raw pixels).  Taken literally on 0-255 values the formula would add colours
    hundreds of grey levels strong (lambda grows with the square of the scale).
    """
    alpha = torch.randn(batch, 3, device=device) * std
    return (alpha * eigenvalues.to(device)) @ eigenvectors.to(device).T * (255.0 * scale)


def train_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, eigenvalues: torch.Tensor,
                eigenvectors: torch.Tensor, pca_std: float, flip: bool, scale: float) -> torch.Tensor:
    b, _, size, _ = x.shape
    _, _, _, flat = crop_indices(b, size, crop, flip, x.device)
    out = _gather(x, flat, crop).float()
    if mean.shape[-1] == size:  # the mean image: cropped and reflected with each image
        out -= _gather(mean.to(x.device).expand(b, -1, -1, -1), flat, crop)
    else:  # one mean per channel
        out -= mean.to(x.device)
    if pca_std:
        out += pca_shift(b, eigenvalues, eigenvectors, pca_std, 1.0, x.device)[:, :, None, None]
    return out.mul_(scale) if scale != 1.0 else out


def _centred(x: torch.Tensor, mean: torch.Tensor, scale: float) -> torch.Tensor:
    out = x.float() - mean.to(x.device)
    return out.mul_(scale) if scale != 1.0 else out


def centre_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, scale: float) -> torch.Tensor:
    size = x.shape[-1]
    t = (size - crop) // 2
    m = mean[..., t:t + crop, t:t + crop] if mean.shape[-1] == size else mean
    return _centred(x[..., t:t + crop, t:t + crop], m, scale)


def ten_crop_batch(x: torch.Tensor, crop: int, mean: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 10, 3, C, C): top-left, top-right, bottom-left, bottom-right, centre, then each reflected."""
    size = x.shape[-1]
    t, e = (size - crop) // 2, size - crop
    corners = [(0, 0), (0, e), (e, 0), (e, e), (t, t)]
    full = mean.shape[-1] == size
    crops = [_centred(x[..., r:r + crop, c:c + crop], mean[..., r:r + crop, c:c + crop] if full else mean, scale)
             for r, c in corners]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=1)
