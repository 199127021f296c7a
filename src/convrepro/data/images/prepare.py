"""``convrepro-data prepare``: the paper's one-time preprocessing, written once per split.

"We down-sampled the images to a fixed resolution of 256 x 256: given a rectangular image,
we first rescaled the image such that the shorter side was of length 256, and then cropped
out the central 256 x 256 patch" (Krizhevsky et al. 2012, section 2).  Decoding and
resizing every JPEG again in every epoch fed a GPU a quarter of what it could take; here
each split is decoded once into ``<split>.u8``, an (N, S, S, 3) uint8 array read by memory
map, beside its labels, the source file list with checksums, the training set's mean
image and colour statistics, and a manifest.

* Resumable: images are written in chunks; ``progress.json`` records what is done, and
  ``prepare`` continues from there after an interruption.
* Safe on a full disk: the arrays are allocated whole (``posix_fallocate``) before the
  first image, and ``manifest.json`` -- the mark of a complete store -- is written last,
  atomically.  A store without it is incomplete and is never read.
* A store records the listing (paths, labels, sizes) it was made from; one whose sources
  changed, or that came from another folder, is refused.  Modification times are left out:
  a data root copied or restored on another machine gets new ones, and the contents were
  verified against SHA256SUMS when the store was written.
* Files that cannot be decoded (truncated, not an image) are listed and left out; CMYK,
  greyscale and PNG-in-a-.JPEG files are decoded to RGB.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from convrepro.errors import DataError

from ..integrity import verify_files
from ..paths import data_root
from ..workers import worker_init
from .folder import IMAGENETTE_NAMES, decode, list_split, listing_key
from .statistics import ColourStatistics
from .store import FORMAT, SPLITS, prepare_command, store_dir

CHUNK = 256  # images per write; the unit of resumption


class _Resized(Dataset):
    """(index, (S, S, 3) uint8 or the reason it failed) for each source file."""

    def __init__(self, samples, size: int):
        self.samples = samples
        self.resize = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        try:
            image = decode(self.samples[i][0])
        except (RuntimeError, OSError, ValueError) as err:
            return i, str(err).splitlines()[0] if str(err) else type(err).__name__
        return i, self.resize(image).permute(1, 2, 0).contiguous().numpy()


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _allocate(arrays: dict[Path, int]) -> None:
    """Every array of the store on disk now, before the first image: a full disk fails here,
    naming the whole store's size, not as a crash (or a second refusal) half-way."""
    if not arrays:
        return
    folder = next(iter(arrays)).parent
    need, free = sum(arrays.values()), shutil.disk_usage(folder).free
    too_little = DataError(f"not enough disk for the image store {folder}: it needs {need / 1e9:.2f} GB, "
                           f"{free / 1e9:.2f} GB are free; free space or set CONVREPRO_PREPARED_DIR to a larger disk")
    if need > free:
        raise too_little
    for path, nbytes in arrays.items():
        with open(path, "ab") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, nbytes)
            except OSError as err:
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                for made in arrays:
                    made.unlink(missing_ok=True)
                raise too_little from None


def prepare(folder: str = "imagenette2-224", size: int = 256, root: str | None = None, workers: int = 0,
            verify_checksums: bool = True, force: bool = False, progress: bool = True) -> Path:
    """Write (or finish, or confirm) the store of ``<data root>/<folder>`` at S = ``size``."""
    from rich.progress import Progress

    base = data_root(root) / folder
    if not base.is_dir():
        raise DataError(f"{base} does not exist. Imagenette: `convrepro-data download imagenette`; "
                        f"ImageNet: put train/<wnid>/*.JPEG and val/<wnid>/*.JPEG there (README).")
    out = store_dir(folder, size, root)
    listings = {split: list_split(base, split) for split in SPLITS}
    classes = listings["train"][0]
    if listings["val"][0] != classes:
        raise DataError(f"{base}: train/ and val/ hold different class folders "
                        f"({len(classes)} vs {len(listings['val'][0])})")
    keys = {split: listing_key(samples, f"size={size}", mtimes=False, base=base)
            for split, (_, samples) in listings.items()}
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text())
            current = {s: existing["splits"][s]["listing"] for s in SPLITS} == keys and existing["format"] == FORMAT
        except (ValueError, KeyError, TypeError):
            current = False  # an unreadable manifest: made again with --force
        if current and not force:
            return out  # complete and current
        if not force:
            raise DataError(f"{out} was prepared from other files than {base} holds now (changed sources, "
                            f"another format, or an altered manifest); prepare it again with "
                            f"`{prepare_command(folder, size)} --force`")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as err:
        raise DataError(f"cannot write the image store in {out} ({err.strerror}); set CONVREPRO_PREPARED_DIR "
                        f"to a writable folder with room for it") from None
    state_path = out / "progress.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("listing") != keys or state.get("format") != FORMAT:  # another attempt's leftovers
        for leftover in out.iterdir():
            leftover.unlink()
        state = {"format": FORMAT, "listing": keys, "done": {s: 0 for s in SPLITS}, "problems": {s: [] for s in SPLITS}}
    files = {}
    if verify_checksums:
        paths = [Path(p) for split in SPLITS for p, _ in listings[split][1]]
        files = verify_files(paths, base, how_to_get="Re-download the data set or restore the file.")
    _allocate({out / f"{s}.u8": len(listings[s][1]) * size * size * 3 for s in SPLITS if state["done"][s] == 0})
    with Progress(disable=not progress, transient=True) as bar:
        for split in SPLITS:
            samples = listings[split][1]
            n, images = len(samples), out / f"{split}.u8"
            array = np.memmap(images, dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
            labels = np.array([label for _, label in samples], dtype=np.int64)
            start = state["done"][split]
            task = bar.add_task(f"preparing {folder} {split} at {size}x{size}", total=n, completed=start)
            loader = DataLoader(_Resized(samples[start:], size), batch_size=CHUNK, num_workers=workers,
                                collate_fn=list, worker_init_fn=worker_init)
            for chunk in loader:
                for i, image in chunk:
                    if isinstance(image, str):
                        state["problems"][split].append([start + i, f"{samples[start + i][0]}: cannot be "
                                                                    f"decoded ({image}); skipped"])
                        array[start + i] = 0
                    else:
                        array[start + i] = image
                array.flush()
                state["done"][split] += len(chunk)
                _write_json(state_path, state)
                bar.update(task, completed=state["done"][split])
            for index, _ in state["problems"][split]:
                labels[index] = -1  # left out by the reader
            np.save(out / f"{split}.labels.npy", labels)
            del array
        stats = _statistics(out, len(listings["train"][1]), size, bar)
    torch.save(stats, out / "statistics.pt")
    for split in SPLITS:
        with open(out / f"{split}.files.tsv", "w") as f:
            for path, label in listings[split][1]:
                rel = str(Path(path).relative_to(base))
                f.write(f"{rel}\t{label}\t{files.get(rel, f'size-{os.stat(path).st_size}')}\n")
    _write_json(manifest, {
        "format": FORMAT, "folder": folder, "size": size, "classes": classes,
        "class_names": [IMAGENETTE_NAMES.get(c, c) for c in classes],
        "splits": {s: {"listing": keys[s], "count": len(listings[s][1]),
                       "dropped": len(state["problems"][s])} for s in SPLITS},
        "problems": [p for s in SPLITS for _, p in state["problems"][s]],
        "checksums": "sha256" if verify_checksums else "size",
    })
    state_path.unlink()
    return out


def _statistics(out: Path, n: int, size: int, bar) -> dict[str, torch.Tensor]:
    """The training split's mean image and colour statistics, read back from the finished
    array (so that a resumed preparation counts every image once)."""
    array = np.memmap(out / "train.u8", dtype=np.uint8, mode="r", shape=(n, size, size, 3))
    keep = np.load(out / "train.labels.npy") >= 0
    stats = ColourStatistics(size)
    task = bar.add_task("mean image and colour covariance", total=n)
    for start in range(0, n, 64):
        stats.add(torch.from_numpy(np.ascontiguousarray(array[start:start + 64][keep[start:start + 64]])))
        bar.update(task, completed=min(start + 64, n))
    return stats.result()
