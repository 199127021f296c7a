"""LightningDataModules.  Each names its evaluation sets so that metrics carry the papers' names."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from convrepro.errors import DataError

from .usps import USPS
from .workers import worker_init


class ClassificationDataModule(pl.LightningDataModule):
    """What the generic task and the end-of-run evaluation may ask of every paper's data.

    After every pass the task evaluates ``eval_names`` (validation loader index i is
    ``eval_names[i]``).  At the end of the run the evaluation stage reads the class
    attributes below, which each data module sets to its paper's answer, and the loaders
    they name; nothing else is probed.
    """

    eval_names: list[str]
    class_names: list[str]
    final_eval: str = "test"          # the set the end-of-run analyses (confusion matrix...) use
    report_rejection: bool = True     # LeCun et al.'s error-versus-rejection figure applies
    ten_crop: bool = False            # Krizhevsky et al.'s 10-crop test: ten_crop_dataloader()
    shifts: tuple[int, ...] = ()      # Waibel et al.'s shift curve: shifted_dataloader(name, s) per s

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []  # files dropped as unreadable, for the run's record

    @property
    def files(self) -> dict[str, str]:
        """Data files and their checksums (the run's fingerprint)."""
        raise NotImplementedError

    def counts(self) -> dict[str, dict[str, int]]:
        """Examples per class and split, for the run's record."""
        raise NotImplementedError

    def eval_dataloader(self, name: str) -> DataLoader:
        return self.val_dataloader()[self.eval_names.index(name)]

    def ten_crop_dataloader(self) -> DataLoader:
        """Batches (B, 10, C, h, w): the four corners, the centre and their mirror images."""
        raise NotImplementedError(f"{type(self).__name__} has no 10-crop test (ten_crop is False)")

    def device_transform(self, batch, purpose: str):
        """A batch on the model's device made ready for it; ``purpose`` is "train", "eval" or
        "ten_crop".  Data that is ready as loaded (the default) passes unchanged."""
        return batch

    def shifted_dataloader(self, name: str, shift: int) -> DataLoader:
        """Evaluation set ``name`` with every input displaced by ``shift`` steps."""
        raise NotImplementedError(f"{type(self).__name__} has no shifted evaluation (shifts is empty)")


class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


class USPSDataModule(ClassificationDataModule):
    """LeCun et al. 1989's data: 7291 training and 2007 test digits, presented in a fixed order.

    The paper reports the error on the whole training set and on the test set after each
    pass, so both are evaluation sets here (there is no separate validation split).
    """

    class_names = [str(d) for d in range(10)]

    def __init__(self, root: str | None = None, form: str = "auto", batch_size: int = 256,
                 eval_batch_size: int = 2048, shuffle: bool = False, shift_pixels: int = 0,
                 train_subset: int | None = None, num_workers: int = 0):
        super().__init__()
        self.root, self.form = root, form
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.shift_pixels = shuffle, shift_pixels
        self.train_subset, self.num_workers = train_subset, num_workers
        self.eval_names = ["train", "test"]
        self.train_set = self.test_set = None

    def prepare_data(self) -> None:
        # Verification happens on load; loading here makes a bad file fail before any run.
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = USPS(self.root, "train", form=self.form)
        self.test_set = USPS(self.root, "test", form=self.form)
        self._train = self.train_set
        if self.train_subset:
            available = len(self.train_set)
            if self.train_subset > available:  # silently all of them would be a run nobody asked for
                raise DataError(f"data.train_subset={self.train_subset} exceeds the {available:,} training "
                                f"patterns; give at most {available} (or null for all)")
            self._train = Subset(self.train_set, range(self.train_subset))

    @property
    def files(self) -> dict[str, str]:
        self.setup()
        return {**self.train_set.files, **self.test_set.files}

    def counts(self) -> dict[str, dict[str, int]]:
        self.setup()
        train_labels = self.train_set.labels[: len(self._train)]
        return {
            "train": dict(zip(self.class_names, torch.bincount(train_labels, minlength=10).tolist(), strict=True)),
            "test": dict(zip(self.class_names, torch.bincount(self.test_set.labels, minlength=10).tolist(),
                             strict=True)),
        }

    def train_dataloader(self) -> DataLoader:
        data = self._train
        if self.shift_pixels:
            # 2022 modern variant: random shifts of up to shift_pixels, background (-1) fill.
            frac = self.shift_pixels / 16
            data = _Transformed(data, v2.RandomAffine(degrees=0, translate=(frac, frac), fill=-1.0))
        return DataLoader(data, batch_size=self.batch_size, shuffle=self.shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          worker_init_fn=worker_init)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self._train, batch_size=self.eval_batch_size),
                DataLoader(self.test_set, batch_size=self.eval_batch_size)]
