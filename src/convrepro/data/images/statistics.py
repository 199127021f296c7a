"""The training set's mean image and RGB colour covariance (Krizhevsky et al. 2012, section 4.1).

"The only preprocessing: subtract the mean activity over the training set from each pixel"
-- a per-pixel mean image at the working size S; and the PCA colour augmentation needs the
eigenvectors and eigenvalues of the 3x3 covariance of RGB pixel values over the training
set.  Both come from one pass over the training images, cached on disk under a key made of
the file list (paths, sizes, mtimes) and S, so later runs read them in milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ..paths import cache_dir
from .folder import ImageSplit, listing_key


def training_statistics(samples: list[tuple[str, int]], size: int, workers: int) -> dict[str, torch.Tensor]:
    """{'mean': (3, S, S) in raw 0-255 units, 'eigenvalues': (3,) of the covariance on the [0, 1]
    scale, 'eigenvectors': (3, 3) columns} -- the same as a prepared store's."""
    # v2: the mean image in raw units (v1 held it on the [0, 1] scale).
    path = cache_dir() / "image-statistics" / f"{listing_key(samples, f'size={size} v2')}.pt"
    if path.is_file():
        return torch.load(path)
    stats = _compute(samples, size, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(stats, tmp)
    tmp.replace(path)
    return stats


class ColourStatistics:
    """The mean image (raw 0-255 units) and the eigen-decomposition of the RGB covariance
    (on the [0, 1] scale, see ``augment.pca_shift``), accumulated over (B, S, S, 3) uint8
    batches: one definition for the prepared store and the JPEG path."""

    def __init__(self, size: int):
        self.size, self.count = size, 0
        self.total = torch.zeros(size, size, 3, dtype=torch.float64)
        self.second = torch.zeros(3, 3, dtype=torch.float64)

    def add(self, images: torch.Tensor) -> None:
        x = images.to(torch.float64)
        self.total += x.sum(0)
        pixels = x.reshape(-1, 3)
        self.second += pixels.T @ pixels
        self.count += len(images)

    def result(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.count
        pixel_mean = mean.mean(dim=(0, 1))
        covariance = (self.second / (self.count * self.size**2) - torch.outer(pixel_mean, pixel_mean)) / 255.0**2
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        return {"mean": mean.permute(2, 0, 1).float().contiguous(), "eigenvalues": eigenvalues.float(),
                "eigenvectors": eigenvectors.float(), "images": torch.tensor(self.count)}


def _compute(samples, size: int, workers: int) -> dict[str, torch.Tensor]:
    from rich.progress import track

    from .folder import collate_skipping

    resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    loader = DataLoader(ImageSplit(samples, resize), batch_size=64, num_workers=workers,
                        collate_fn=collate_skipping)
    stats = ColourStatistics(size)
    for batch in track(loader, description=f"mean image and colour covariance ({len(samples)} images)",
                       transient=True):
        if batch is not None:
            stats.add(batch[0].permute(0, 2, 3, 1))
    return {**stats.result(), "source": Path(samples[0][0]).parents[2].as_posix()}
