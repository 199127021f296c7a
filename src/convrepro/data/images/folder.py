"""An ``ImageFolder``-layout split (``<root>/<split>/<wnid>/*.JPEG``) that never crashes on a bad file.

torchvision's ``ImageFolder`` finds the classes and files; decoding is torchvision's
``decode_image`` in RGB mode, so greyscale (and CMYK) JPEGs become 3-channel images.
A file that cannot be decoded is found by the scan (:func:`scan`) before training and left
out with its reason; one that breaks later (changed on disk mid-run) yields ``None``, which
:func:`collate_skipping` drops with a warning, so an epoch never dies on one image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.dataloader import default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from convrepro.errors import DataError

from ..paths import cache_dir

log = logging.getLogger(__name__)

# The Imagenette classes (fast.ai, 2019) by their ImageNet WordNet ids.
IMAGENETTE_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}


def decode(path: str | Path) -> torch.Tensor:
    """uint8 (3, H, W) RGB; raises on a file that is not a readable image."""
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def list_split(root: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist: an image data set needs {root}/{split}/<class>/<image> "
                        f"(torchvision's ImageFolder layout)")
    classes, index = find_classes(str(folder))
    samples = make_dataset(str(folder), index, extensions=IMG_EXTENSIONS)
    if not samples:
        raise DataError(f"{folder} holds no images")
    return classes, samples


class ImageSplit(Dataset):
    """(transform(image), label) for each (path, label) in ``samples``; ``None`` for a bad file."""

    def __init__(self, samples: list[tuple[str, int]], transform=None):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            image = decode(path)
        except (RuntimeError, OSError, ValueError) as err:
            log.warning("skipped %s: %s", path, err)
            return None
        return (self.transform(image) if self.transform else image), label


def collate_skipping(batch):
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    return default_collate(kept)


class _Decoded(Dataset):
    """For the scan: the decoded image's shape, or the reason it failed."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        try:
            return tuple(decode(self.samples[i][0]).shape)
        except (RuntimeError, OSError, ValueError) as err:
            return str(err).splitlines()[0] if str(err) else type(err).__name__


def listing_key(samples: list[tuple[str, int]], extra: str = "", mtimes: bool = True, base: Path | None = None) -> str:
    """A cache key for a list of files: changes when a path, label, size or (``mtimes``)
    modification time does.  Without mtimes it survives copies that do not keep them (a data
    root restored on a new machine): what a prepared store checks, its contents having been
    verified against SHA256SUMS when it was written.  With ``base`` the paths count relative
    to it: the same data root reached through another path (a link, a mount) is the same."""
    h = hashlib.sha256(f"{extra}\n".encode())
    for path, label in samples:
        st = os.stat(path)
        stamp = f"\0{st.st_mtime_ns}" if mtimes else ""
        name = os.path.relpath(path, base) if base is not None else path
        h.update(f"{name}\0{label}\0{st.st_size}{stamp}\n".encode())
    return h.hexdigest()[:20]


def scan(samples: list[tuple[str, int]], workers: int, description: str) -> dict[str, str]:
    """Decode every file once: {path: reason} for those that cannot be decoded.

    Remembered under the listing's key, so later runs over unchanged files decode nothing.
    """
    from rich.progress import track

    cached = cache_dir() / "image-scan" / f"{listing_key(samples)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    loader = DataLoader(_Decoded(samples), batch_size=64, num_workers=workers, collate_fn=list)
    bad, start = {}, 0
    for results in track(loader, description=description, transient=True):
        for offset, result in enumerate(results):
            if isinstance(result, str):
                bad[samples[start + offset][0]] = result
        start += len(results)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(bad))
    tmp.replace(cached)
    return bad
