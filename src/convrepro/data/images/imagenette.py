"""``convrepro-data download imagenette``: the fast.ai Imagenette archive, MD5-verified.

The archive URLs and their MD5s are torchvision's (``torchvision.datasets.Imagenette``); the
download itself is ours (temporary file, verified, then renamed; progress bar; a mirror
with ``--base-url``).  The tree is extracted to ``<root>/imagenette2[-320|-160]`` in the
ImageFolder layout and a SHA256SUMS of its files is written, so every later run verifies
its images as it does the shared copy.  Use it with ``data.folder=imagenette2-320``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from torchvision.datasets import Imagenette

from convrepro.errors import DataError

from ..download import extract, fetch, write_manifest

SIZES = {"full": "full", "320": "320px", "160": "160px"}


def download(root: str | Path, size: str = "320", base_url: str | None = None,
             md5: str | None = None) -> Path:
    if size not in SIZES:
        raise DataError(f"unknown Imagenette size {size!r}; choose from {', '.join(SIZES)}")
    url, expected = Imagenette._ARCHIVES[SIZES[size]]
    name = url.rsplit("/", 1)[1]
    folder = Path(root) / name.removesuffix(".tgz")
    if (folder / "SHA256SUMS").is_file():
        return folder
    if base_url:
        url = base_url.rstrip("/") + "/" + name
    archive = fetch(url, Path(root) / "archives" / name, md5 or expected, algorithm="md5")
    prefix = folder.name + "/"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        try:
            extract(archive, Path(tmp), lambda n: n.startswith((prefix + "train/", prefix + "val/", prefix
                                                                  + "noisy_imagenette.csv")))
        except DataError:
            archive.unlink(missing_ok=True)
            raise
        staged = Path(tmp) / folder.name
        for split in ("train", "val"):
            classes = [p for p in (staged / split).glob("n*") if p.is_dir()] if (staged / split).is_dir() else []
            if len(classes) != 10:
                raise DataError(f"{archive}: expected 10 class folders in {prefix}{split}/, found {len(classes)}")
        write_manifest(staged)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(staged), folder)
    return folder
