"""AlexNet's data: the paper's 256 x 256 images, augmented on the training device.

Two sources, the same batches: ``source=store`` (the default) reads the prepared uint8
store (``convrepro-data prepare imagenette|imagenet``, see ``store.py``); ``source=jpeg``
decodes and resizes the JPEG folder in every epoch (no disk beyond the JPEGs, slower).
Either way a loader yields (B, S, S, 3) uint8 images, and ``device_transform`` -- called
by Lightning after the batch reached the model's device -- crops, reflects, centres and
colours them there (``augment.py``).  Works for Imagenette (``folder=imagenette2-224``)
and ImageNet (``folder=imagenet``: ``<root>/imagenet/{train,val}/<wnid>/*.JPEG``).
The validation split is the evaluation set, as in the paper's ILSVRC-2012 table.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from convrepro.errors import DataError

from ..datamodules import ClassificationDataModule
from ..integrity import verify_files
from ..paths import data_root
from ..workers import worker_init
from . import augment
from .folder import IMAGENETTE_NAMES, ImageSplit, collate_skipping, list_split, scan
from .statistics import training_statistics
from .store import ImageStore, StoreSplit, whole_batch

MEANS = ("pixel", "channel")
SOURCES = ("store", "jpeg")


def default_workers(source: str = "jpeg") -> int:
    """Loader processes: decoding JPEGs wants all cores but the training loop's (at most 16);
    reading the store is a memory copy, which a few keep ahead of any GPU.  Without a GPU
    the store is read in the training process: the CPU's training step dwarfs a 3 ms gather,
    and a worker would only add a copy of every batch into shared memory (measured on 2
    cores, 227 px: 2,078-3,013 images/s with one worker against 3,859-4,442 without)."""
    cores = max(1, min(16, (os.cpu_count() or 2) - 1))
    if source == "jpeg":
        return cores
    return min(4, cores) if torch.cuda.is_available() else 0


class ImageFolderDataModule(ClassificationDataModule):
    final_eval = "val"
    report_rejection = False

    def __init__(self, root: str | None = None, folder: str = "imagenette2-224", image_size: int = 256,
                 crop_size: int = 227, mean: str = "pixel", pca_std: float = 0.1, flip: bool = True,
                 batch_size: int = 128, eval_batch_size: int = 256, num_workers: int | None = None,
                 train_subset: int | None = None, val_subset: int | None = None, check_images: bool = True,
                 verify_checksums: bool = True, ten_crop: bool = True, source: str = "store",
                 pixel_scale: str = "raw", in_memory: bool | None = None):
        super().__init__()
        if mean not in MEANS:
            raise ValueError(f"mean must be one of {MEANS}, got {mean!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if pixel_scale not in augment.SCALES:
            raise ValueError(f"pixel_scale must be one of {tuple(augment.SCALES)}, got {pixel_scale!r}")
        if crop_size > image_size:
            raise ValueError(f"crop_size={crop_size} is larger than image_size={image_size}")
        if pca_std < 0:
            raise ValueError(f"pca_std must be >= 0, got {pca_std}")
        self.root, self.folder, self.source = root, folder, source
        self.image_size, self.crop_size, self.mean_kind = image_size, crop_size, mean
        self.pca_std, self.flip, self.scale = pca_std, flip, augment.SCALES[pixel_scale]
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = default_workers(source) if num_workers is None else num_workers
        # Augmentation by whole-batch gathers (None: on a GPU) or image by image (on a CPU): see augment.
        self.whole_batch: bool | None = None
        self.train_subset, self.val_subset = train_subset, val_subset
        self.check_images, self.verify_checksums, self.ten_crop = check_images, verify_checksums, ten_crop
        self.in_memory = in_memory
        self.eval_names = ["val"]
        self._ready = False

    # ---- files ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.source == "store":
            self._open_store()
        else:
            self._list_jpegs()
        self.class_names = [IMAGENETTE_NAMES.get(c, c) for c in self.classes]
        mean = self.statistics["mean"].permute(1, 2, 0).contiguous()  # (S, S, 3), as the images lie
        self.mean = mean if self.mean_kind == "pixel" else mean.mean(dim=(0, 1), keepdim=True)
        self._on_device: dict = {}  # the mean image (and its mirror) on each device, made once
        self._ready = True

    def _open_store(self) -> None:
        self.store = ImageStore.open(self.folder, self.image_size, self.root)
        self.classes = self.store.manifest["classes"]
        self.splits, self.indices = {}, {}
        for split, limit in (("train", self.train_subset), ("val", self.val_subset)):
            images, labels = self.store.split(split, self.in_memory)
            kept = np.flatnonzero(labels >= 0).tolist()  # ImageNet: 1.28 M labels
            self.splits[split] = (images, labels)
            self.indices[split] = _every_kth(kept, limit, f"data.{split}_subset")
        self.problems = list(self.store.manifest["problems"])
        self.statistics = self.store.statistics()

    def _list_jpegs(self) -> None:
        self.base = data_root(self.root) / self.folder
        if not self.base.is_dir():
            raise DataError(f"{self.base} does not exist. Imagenette: `convrepro-data download imagenette`; "
                            f"ImageNet: put train/<wnid>/*.JPEG and val/<wnid>/*.JPEG there (README).")
        self.classes, train = list_split(self.base, "train")
        val_classes, val = list_split(self.base, "val")
        if val_classes != self.classes:
            raise DataError(f"{self.base}: train/ and val/ hold different class folders "
                            f"({len(self.classes)} vs {len(val_classes)})")
        self.train_samples = _every_kth(train, self.train_subset, "data.train_subset")
        self.val_samples = _every_kth(val, self.val_subset, "data.val_subset")
        if self.check_images:
            self._drop_unreadable()
        self.statistics = training_statistics(self.train_samples, self.image_size, self.num_workers)

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
        if self.source == "store":  # verified when the store was prepared
            return {**self.store.files("train", self.indices["train"]), **self.store.files("val", self.indices["val"])}
        paths = [type(self.base)(p) for p, _ in self.train_samples + self.val_samples]
        if not self.verify_checksums:  # ImageNet's 1.3 M files: sizes only (not verified)
            return {str(p.relative_to(self.base)): f"size-{p.stat().st_size}" for p in paths}
        return verify_files(paths, self.base, how_to_get="Re-download the data set or restore the file.")

    def _labels(self, split: str) -> list[int]:
        if self.source == "store":
            return self.splits[split][1][self.indices[split]].tolist()
        return [label for _, label in (self.train_samples if split == "train" else self.val_samples)]

    def counts(self) -> dict[str, dict[str, int]]:
        self.setup()
        out = {}
        for split in ("train", "val"):
            per_class = torch.bincount(torch.tensor(self._labels(split)), minlength=len(self.classes)).tolist()
            out[split] = dict(zip(self.class_names, per_class, strict=True))
        return out

    # ---- loaders: (B, S, S, 3) uint8 --------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if self.source == "store":
            data, collate = StoreSplit(*self.splits[split], self.indices[split]), whole_batch
        else:
            resize = v2.Compose([v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size),
                                 _ChannelsLast()])
            data = ImageSplit(self.train_samples if split == "train" else self.val_samples, resize)
            collate = collate_skipping
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
                          collate_fn=collate, worker_init_fn=worker_init,
                          drop_last=shuffle and len(data) > batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("val", self.eval_batch_size, shuffle=False)]

    def ten_crop_dataloader(self) -> DataLoader:
        return self._loader("val", max(1, self.eval_batch_size // 10), shuffle=False)

    # ---- on the training device ---------------------------------------------------------------
    def device_transform(self, batch, purpose: str):
        if batch is None:
            return None
        x, y = batch
        if x.device not in self._on_device:  # copied once per device, not per batch
            s = self.statistics
            mean = self.mean.to(x.device)
            self._on_device[x.device] = (mean, mean.flip(1), s["eigenvalues"].to(x.device),
                                         s["eigenvectors"].to(x.device))
        mean, mirrored, eigenvalues, eigenvectors = self._on_device[x.device]
        if purpose == "train":
            x = augment.train_batch(x, self.crop_size, mean, eigenvalues, eigenvectors, self.pca_std, self.flip,
                                    self.scale, mirrored, whole_batch=self.whole_batch)
        elif purpose == "ten_crop":
            x = augment.ten_crop_batch(x, self.crop_size, mean, self.scale, mirrored, whole_batch=self.whole_batch)
        else:
            x = augment.centre_batch(x, self.crop_size, mean, self.scale, whole_batch=self.whole_batch)
        return x, y

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        return self.device_transform(batch, "train" if training else "eval")


class _ChannelsLast(torch.nn.Module):
    """(3, S, S) -> (S, S, 3): the JPEG path's images laid out as the store's."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.permute(1, 2, 0)


def _every_kth(samples: list, limit: int | None, key: str) -> list:
    """A class-balanced subset: ImageFolder lists files class by class, so every k-th file."""
    if limit and limit > len(samples):  # silently all of them would be a run nobody asked for
        raise DataError(f"{key}={limit} exceeds the {len(samples):,} images of the split; give at most "
                        f"{len(samples)} (or null for all)")
    if not limit or limit == len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]
