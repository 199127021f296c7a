"""The prepared image store: the format, and reading it.

An (N, S, S, 3) uint8 array per split (``<split>.u8``, read by memory map) beside its labels
(``<split>.labels.npy``, -1 for a file left out), the source file list with checksums
(``<split>.files.tsv``), the training set's statistics (``statistics.pt``) and
``manifest.json``, the mark of a complete store.  ``prepare.py`` writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from convrepro.errors import DataError

from ..paths import data_root, prepared_root
from .folder import list_split, listing_key

FORMAT = 2  # 2: listings relative to the data set's folder
SPLITS = ("train", "val")


def store_dir(folder: str, size: int, root: str | None = None) -> Path:
    return prepared_root(root) / f"{folder}-{size}"


# `convrepro-data prepare NAME`: the two data sets by name, any other ImageFolder tree by its folder.
DATASETS = {"imagenette": "imagenette2-224", "imagenet": "imagenet"}


def prepare_command(folder: str, size: int) -> str:
    name = next((n for n, f in DATASETS.items() if f == folder), folder)
    return f"convrepro-data prepare {name} --size {size}"


@dataclass
class ImageStore:
    """A complete store, checked against its sources; ``split(name)`` gives its readable part."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, folder: str, size: int, root: str | None = None) -> ImageStore:
        out = store_dir(folder, size, root)
        command = prepare_command(folder, size)
        if not (out / "manifest.json").is_file():
            state = "is incomplete (its preparation was interrupted)" if out.is_dir() else "does not exist"
            raise DataError(f"the prepared image store {out} {state}; prepare it with `{command}` "
                            f"(or read the JPEGs directly with data.source=jpeg)")
        again = f"prepare it again with `{command} --force`"
        manifest = _manifest(out, again)
        if manifest.get("format") != FORMAT or manifest.get("size") != size:
            raise DataError(f"{out} is a store of another format or size; {again}")
        _check_files(out, manifest, again)
        base = data_root(root) / folder
        if base.is_dir():  # sources still there: they must be the ones the store was made from
            for split in SPLITS:
                classes, samples = list_split(base, split)
                listing = listing_key(samples, f"size={size}", mtimes=False, base=base)
                if listing != manifest["splits"][split]["listing"]:
                    raise DataError(f"{out} was prepared from other files than {base}/{split} holds now; {again}")
                if classes != manifest["classes"]:
                    raise DataError(f"{out}/manifest.json lists other classes than {base}/{split} holds "
                                    f"(or in another order); {again}")
        return cls(out, manifest)

    def split(self, name: str, in_memory: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images (N, S, S, 3) uint8, labels (N,), -1 for a file left out).

        ``in_memory``: read the whole split into RAM (True), map it (False), or decide (None):
        into RAM when it takes under a quarter of the memory available.  Random batches from
        a map are only as fast as the page cache holds the file; on these machines it did not
        (Imagenette at 256: ~4,000 img/s from disk against ~25,000 from RAM).
        """
        n, s = self.manifest["splits"][name]["count"], self.manifest["size"]
        path = self.path / f"{name}.u8"
        if in_memory is None:
            in_memory = path.stat().st_size < _available_memory() / 4
        if in_memory:
            images = np.fromfile(path, dtype=np.uint8).reshape(n, s, s, 3)
        else:
            images = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, s, s, 3))
        return images, np.load(self.path / f"{name}.labels.npy")

    def files(self, split: str, indices: list[int]) -> dict[str, str]:
        """{source path relative to its folder: SHA-256 (or size)} of the images at ``indices``."""
        lines = (self.path / f"{split}.files.tsv").read_text().splitlines()
        return dict(lines[i].split("\t")[::2] for i in indices)

    def statistics(self) -> dict[str, torch.Tensor]:
        return torch.load(self.path / "statistics.pt")


def kept_counts(manifest: dict) -> str:
    """``train 9469, val 3925``: the images each split holds, those left out not counted."""
    return ", ".join(f"{s} {v['count'] - v['dropped']}" for s, v in manifest["splits"].items())


def check_stores(root: str | None = None, required: bool = False) -> list[str]:
    """Every prepared store under the prepared root opened as a run opens it (manifest, array
    sizes, labels, and its sources where they are present): one line per store."""
    stores = sorted(p for p in prepared_root(root).glob("*-*") if p.is_dir())
    if required and not stores:
        raise DataError(f"no prepared image store in {prepared_root(root)} "
                        f"(`{prepare_command('imagenette2-224', 256)}`)")
    lines = []
    for path in stores:
        folder, _, size = path.name.rpartition("-")
        if not size.isdigit():
            continue
        store = ImageStore.open(folder, int(size), root)
        lines.append(f"{path}: {kept_counts(store.manifest)} images at {size}x{size}, sizes, labels and sources match")
    return lines


def _manifest(out: Path, again: str) -> dict:
    """manifest.json, whole and with every field a reader uses."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
        for split in SPLITS:
            int(manifest["splits"][split]["count"]), str(manifest["splits"][split]["listing"])
        if not (isinstance(manifest["classes"], list) and isinstance(manifest["size"], int)):
            raise TypeError("classes or size")
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{out}/manifest.json is not a store's manifest ({type(err).__name__}: {err}); "
                        f"{again}") from None
    return manifest


def _check_files(out: Path, manifest: dict, again: str) -> None:
    """Every array as long as the manifest says, every label one of its classes (or -1): a
    truncated or edited store is refused here, not as a reshape error in the middle of a run."""
    s, classes = manifest["size"], len(manifest["classes"])
    for split in SPLITS:
        n = manifest["splits"][split]["count"]
        images, labels = out / f"{split}.u8", out / f"{split}.labels.npy"
        have = images.stat().st_size if images.is_file() else None
        if have != n * s * s * 3:
            raise DataError(f"{images} holds {have if have is not None else 'no'} bytes, its manifest says "
                            f"{n} images of {s}x{s} ({n * s * s * 3} bytes): the store is truncated or altered; "
                            f"{again}")
        try:
            values = np.load(labels)
        except (OSError, ValueError) as err:
            raise DataError(f"{labels} cannot be read ({err}); {again}") from None
        if values.shape != (n,) or (n and (values.min() < -1 or values.max() >= classes)):
            raise DataError(f"{labels} does not hold {n} labels from -1 to {classes - 1}: the store is altered; "
                            f"{again}")


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux), else 0 (then the store is mapped, not read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class StoreSplit(Dataset):
    """(image (S, S, 3) uint8, label) for the kept images at ``indices`` of a store split.

    The DataLoader asks for whole batches (``__getitems__``): one sorted gather of the
    split, returned as one (B, S, S, 3) tensor -- no per-image objects, no stack.  The
    batch's images come in ascending store order (the sampler chose which; the order inside
    a batch does not matter to SGD).  Read in the training process itself (no loader
    workers: a CPU-only machine), batches are gathered into one of three kept buffers in
    turn: a fresh 25 MB batch is fresh pages, and faulting them in took three times as long
    as the gather (10 against 3 ms at 227 px, batch 128).  A batch therefore stays valid
    while the next two are read: Lightning reads none ahead of the batch in use, and
    ``tests/test_data_store.py::test_reused_batch_buffers_hold_each_batch_until_its_step_has_used_it``
    fails for a loader that reads three.  A loader worker gathers each
    batch into new shared memory, which its queue then hands over without a copy (on an
    H100's 16 cores: 10,286 against 9,137 img/s medians with 4 workers, README).
    """

    RING = 3

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: list[int]):
        self.images, self.labels, self.indices = images, labels, np.asarray(indices, dtype=np.int64)
        self._ring: list[torch.Tensor] = []
        self._turn = 0

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = self.indices[i]
        return torch.from_numpy(np.array(self.images[j])), int(self.labels[j])

    def __getitems__(self, positions: list[int]):
        rows = np.sort(self.indices[positions])
        labels = torch.from_numpy(self.labels[rows])
        shape = (len(rows), *self.images.shape[1:])
        if not self.images.flags.writeable:  # a read-only map, which torch will not wrap
            return torch.from_numpy(self.images[rows]), labels
        if get_worker_info() is not None:
            # A worker's batch reaches the training process through shared memory: gather it
            # there at once (storage made as PyTorch's own collate makes it), not into fresh
            # private pages that the queue would copy again.
            shared = torch.UntypedStorage._new_shared(int(np.prod(shape)))
            out = torch.empty(0, dtype=torch.uint8).set_(shared).view(shape)
            torch.index_select(torch.from_numpy(self.images), 0, torch.from_numpy(rows), out=out)
            return out, labels
        if not self._ring or self._ring[0].shape != shape:
            with torch.inference_mode(False):  # writable whatever mode reads first
                self._ring = [torch.empty(shape, dtype=torch.uint8) for _ in range(self.RING)]
        self._turn = (self._turn + 1) % self.RING
        out = self._ring[self._turn]
        torch.index_select(torch.from_numpy(self.images), 0, torch.from_numpy(rows), out=out)
        return out, labels


def whole_batch(batch):
    """The collate function for ``StoreSplit``: its batches arrive already whole."""
    return batch
