"""The USPS zip-code digits (LeCun et al. 1989's 7291 / 2007 split), as torchvision-style dataset.

Two public forms are read from ``<root>/usps``:

* ESL form (Hastie, Tibshirani & Friedman's data page): ``zip.train.gz``/``zip.test.gz``,
  one digit per line, the label (0-9) then 256 grey values in [-1, 1], row-major 16x16.
* LIBSVM form: ``usps.bz2``/``usps.t.bz2``, ``label index:value ...`` with labels 1-10
  (torchvision's ``USPS`` reads this form; its MD5s are the ones torchvision checks).

The ESL form is preferred when both are present.  Values stay in [-1, 1]: the paper's
input range, with -1 the background.
"""

from __future__ import annotations

import bz2
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from convrepro.errors import DataError

from .download import fetch
from .integrity import verify
from .paths import data_root


@dataclass(frozen=True)
class SourceFile:
    name: str
    url: str
    digest: str
    algorithm: str
    form: str


ESL_URL = "https://hastie.su.domains/ElemStatLearn/datasets/"
LIBSVM_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
FILES = {
    ("esl", "train"): SourceFile("zip.train.gz", ESL_URL + "zip.train.gz",
                                 "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
                                 "sha256", "esl"),
    ("esl", "test"): SourceFile("zip.test.gz", ESL_URL + "zip.test.gz",
                                "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f",
                                "sha256", "esl"),
    ("libsvm", "train"): SourceFile("usps.bz2", LIBSVM_URL + "usps.bz2",
                                    "ec16c51db3855ca6c91edd34d0e9b197", "md5", "libsvm"),
    ("libsvm", "test"): SourceFile("usps.t.bz2", LIBSVM_URL + "usps.t.bz2",
                                   "8ea070ee2aca1ac39742fdd1ef5ed118", "md5", "libsvm"),
}
SPLIT_SIZES = {"train": 7291, "test": 2007}
HOW_TO_GET = "Fetch it with `convrepro-data download usps` (or copy the public file there by hand)."


def _pick_form(folder: Path, split: str, form: str) -> SourceFile:
    if form != "auto":
        if (form, split) not in FILES:
            raise DataError(f"unknown USPS form {form!r}; use esl, libsvm or auto")
        return FILES[(form, split)]
    for candidate in ("esl", "libsvm"):
        if (folder / FILES[(candidate, split)].name).exists():
            return FILES[(candidate, split)]
    return FILES[("esl", split)]  # neither present: report the preferred file as missing


def _parse(path: Path, form: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if form == "esl":
            with gzip.open(path, "rt") as f:
                values = np.array(f.read().split(), dtype=np.float32)
            if values.size % 257:
                raise ValueError(f"{values.size} numbers is not a whole number of 257-value rows")
            rows = values.reshape(-1, 257)
            return rows[:, 1:].reshape(-1, 16, 16), rows[:, 0].astype(np.int64)
        with bz2.open(path, "rt") as f:
            lines = f.read().splitlines()
        labels = np.array([int(line.split(None, 1)[0]) - 1 for line in lines], dtype=np.int64)
        images = np.array(
            [[float(item.split(":")[1]) for item in line.split()[1:]] for line in lines], dtype=np.float32
        )
        return images.reshape(-1, 16, 16), labels
    except PermissionError:
        raise  # not a damaged file: the command reports it as permission denied
    except (OSError, EOFError, ValueError, IndexError) as err:
        raise DataError(f"{path} could not be parsed as the USPS {form} form: {err}. {HOW_TO_GET}") from None


class USPS(Dataset):
    """16x16 digits in [-1, 1] as (1, 16, 16) float tensors with integer labels."""

    def __init__(self, root=None, split: str = "train", *, form: str = "auto", transform=None):
        if split not in SPLIT_SIZES:
            raise DataError(f"USPS split must be 'train' or 'test', got {split!r}")
        self.folder = data_root(root) / "usps"
        self.split, self.transform = split, transform
        self.source = _pick_form(self.folder, split, form)
        path = self.folder / self.source.name
        self.digest = verify(path, self.source.digest, algorithm=self.source.algorithm,
                             how_to_get=HOW_TO_GET)
        images, labels = _parse(path, self.source.form)
        if len(labels) != SPLIT_SIZES[split] or labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{path} holds {len(labels)} digits with labels {labels.min()}..{labels.max()}; "
                            f"expected {SPLIT_SIZES[split]} digits labelled 0-9. {HOW_TO_GET}")
        self.images = torch.from_numpy(images).unsqueeze(1)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    @property
    def files(self) -> dict[str, str]:
        return {f"usps/{self.source.name}": self.digest}


def download(root: str | Path, form: str = "esl", base_url: str | None = None) -> list[Path]:
    """Fetch both splits of one form into ``<root>/usps`` (``base_url`` replaces the public site)."""
    if form not in ("esl", "libsvm"):
        raise DataError(f"unknown USPS form {form!r}; use esl or libsvm")
    fetched = []
    for split in ("train", "test"):
        source = FILES[(form, split)]
        url = (base_url.rstrip("/") + "/" + source.name) if base_url else source.url
        fetched.append(fetch(url, Path(root) / "usps" / source.name, source.digest,
                             algorithm=source.algorithm))
    return fetched
