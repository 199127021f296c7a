"""AlexNet's data: an ImageNet-layout folder with the paper's preprocessing and augmentation.

Works for Imagenette (``folder=imagenette2-224``, the CPU stand-in) and for a prepared
ImageNet (``folder=imagenet``: ``<root>/imagenet/train/<wnid>/*.JPEG`` and
``<root>/imagenet/val/<wnid>/*.JPEG``, the layout torchvision's ImageFolder reads).
The validation split is the evaluation set, as in the paper's ILSVRC-2012 table.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader

from convrepro.errors import DataError

from ..datamodules import ClassificationDataModule
from ..integrity import verify_files
from ..paths import data_root
from ..workers import worker_init
from . import transforms
from .folder import IMAGENETTE_NAMES, ImageSplit, collate_skipping, list_split, scan
from .statistics import training_statistics

MEANS = ("pixel", "channel")


def default_workers() -> int:
    """Decoding processes: all cores but the one the training loop needs, at most 16."""
    return max(1, min(16, (os.cpu_count() or 2) - 1))


class ImageFolderDataModule(ClassificationDataModule):
    final_eval = "val"
    report_rejection = False

    def __init__(self, root: str | None = None, folder: str = "imagenette2-224", image_size: int = 256,
                 crop_size: int = 227, mean: str = "pixel", pca_std: float = 0.1, flip: bool = True,
                 batch_size: int = 128, eval_batch_size: int = 256, num_workers: int | None = None,
                 train_subset: int | None = None, val_subset: int | None = None, check_images: bool = True,
                 verify_checksums: bool = True, ten_crop: bool = True):
        super().__init__()
        if mean not in MEANS:
            raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
        if crop_size > image_size:
            raise ValueError(f"crop_size={crop_size} is larger than image_size={image_size}")
        if pca_std < 0:
            raise ValueError(f"pca_std must be >= 0, got {pca_std}")
        self.root, self.folder = root, folder
        self.image_size, self.crop_size, self.mean_kind = image_size, crop_size, mean
        self.pca_std, self.flip = pca_std, flip
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.train_subset, self.val_subset = train_subset, val_subset
        self.check_images, self.verify_checksums, self.ten_crop = check_images, verify_checksums, ten_crop
        self.eval_names = ["val"]
        self._ready = False

    # ---- files ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        self.base = data_root(self.root) / self.folder
        if not self.base.is_dir():
            raise DataError(f"{self.base} does not exist. Imagenette: `convrepro-data download imagenette`; "
                            f"ImageNet: put train/<wnid>/*.JPEG and val/<wnid>/*.JPEG there (README).")
        self.classes, train = list_split(self.base, "train")
        val_classes, val = list_split(self.base, "val")
        if val_classes != self.classes:
            raise DataError(f"{self.base}: train/ and val/ hold different class folders "
                            f"({len(self.classes)} vs {len(val_classes)})")
        self.train_samples = _every_kth(train, self.train_subset)
        self.val_samples = _every_kth(val, self.val_subset)
        self.class_names = [IMAGENETTE_NAMES.get(c, c) for c in self.classes]
        if self.check_images:
            self._drop_unreadable()
        self.statistics = training_statistics(self.train_samples, self.image_size, self.num_workers)
        self.mean = (self.statistics["mean"] if self.mean_kind == "pixel"
                     else self.statistics["mean"].mean(dim=(1, 2), keepdim=True))
        self._ready = True

    def _drop_unreadable(self) -> None:
        for name in ("train_samples", "val_samples"):
            samples = getattr(self, name)
            bad = scan(samples, self.num_workers, f"checking {len(samples)} {name[:-8]} images")
            if bad:
                self.problems += [f"{path}: cannot be decoded ({reason}); skipped" for path, reason in bad.items()]
                setattr(self, name, [s for s in samples if s[0] not in bad])
        for line in self.problems:
            print(f"warning: {line}")

    @property
    def files(self) -> dict[str, str]:
        self.setup()
        paths = [type(self.base)(p) for p, _ in self.train_samples + self.val_samples]
        if not self.verify_checksums:  # ImageNet's 1.3 M files: sizes only (not verified)
            return {str(p.relative_to(self.base)): f"size-{p.stat().st_size}" for p in paths}
        return verify_files(paths, self.base, how_to_get="Re-download the data set or restore the file.")

    def counts(self) -> dict[str, dict[str, int]]:
        self.setup()
        out = {}
        for split, samples in (("train", self.train_samples), ("val", self.val_samples)):
            labels = torch.tensor([label for _, label in samples])
            per_class = torch.bincount(labels, minlength=len(self.classes)).tolist()
            out[split] = dict(zip(self.class_names, per_class, strict=True))
        return out

    # ---- loaders -------------------------------------------------------------------------
    def _loader(self, samples, transform, batch_size, shuffle):
        return DataLoader(ImageSplit(samples, transform), batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available(), collate_fn=collate_skipping, worker_init_fn=worker_init,
                          drop_last=shuffle and len(samples) > batch_size)

    def train_dataloader(self) -> DataLoader:
        s = self.statistics
        t = transforms.train_transform(self.image_size, self.crop_size, self.mean, s["eigenvalues"],
                                       s["eigenvectors"], self.pca_std, self.flip)
        return self._loader(self.train_samples, t, self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        t = transforms.centre_transform(self.image_size, self.crop_size, self.mean)
        return [self._loader(self.val_samples, t, self.eval_batch_size, shuffle=False)]

    def ten_crop_dataloader(self) -> DataLoader:
        t = transforms.ten_crop_transform(self.image_size, self.crop_size, self.mean)
        return DataLoader(ImageSplit(self.val_samples, t), batch_size=max(1, self.eval_batch_size // 10),
                          num_workers=self.num_workers, collate_fn=collate_skipping, worker_init_fn=worker_init)


def _every_kth(samples: list, limit: int | None) -> list:
    """A class-balanced subset: ImageFolder lists files class by class, so every k-th file."""
    if not limit or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]
