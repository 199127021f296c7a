"""Checksums: verified on first use, then trusted while the file's stamp is unchanged.

The stamp is what a writer cannot set back: size, mtime_ns, ctime_ns, inode and device.
A file swapped under the same size and mtime (``touch -r``) still gets a new ctime (the
kernel sets it on every change, and nothing but the clock sets it), and a file replaced
by another gets a new inode: either way it is hashed again, and the digest a run records
is the one of the file it read.  Trusting the cache is recorded all the same:
``verification()`` says whether this process hashed every file it verified or took some
digests from the cache (runs tag it ``dataset.verified``), and ``rehash()``
(``convrepro-data check``, the ``rehash_data`` config key) makes every digest fresh.

Hashing the 1.3 GB of Imagenette on every run would cost more than a LeCun training run,
so each verified file's (stamp, digest) is remembered in the cache directory.
A run's dataset fingerprint is the SHA-256 over the sorted (name, digest) pairs of its
files, logged as a tag so that two runs can be compared knowing they saw the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

from convrepro.errors import DataError

from .paths import cache_dir

_LOCK = threading.Lock()
_REHASH = False
_COUNTS = {"hashed": 0, "cached": 0}  # digests computed / taken from the cache by this process


def rehash(on: bool = True) -> None:
    """Hash every file again instead of trusting the cache."""
    global _REHASH
    _REHASH = on


def verification() -> str:
    """``hashed``: every verified file was hashed by this process; ``cached``: some digests came
    from the cache (files with unchanged stamps); ``none``: nothing was verified."""
    if _COUNTS["cached"]:
        return "cached"
    return "hashed" if _COUNTS["hashed"] else "none"


def _cache_file() -> Path:
    return cache_dir() / "verified-checksums.json"


def _load() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_digest(path: Path, algorithm: str = "sha256") -> str:
    """The file's digest, computed once per (path, stamp)."""
    return cached_digests([path], algorithm)[0]


def cached_digests(paths: list[Path], algorithm: str = "sha256", progress: str | None = None) -> list[str]:
    """Digests of many files with one read and one write of the cache (an image data set
    has thousands of files: a cache rewrite per file would be quadratic)."""
    stamps, keys = [], []
    for path in paths:
        st = path.stat()
        stamps.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev])
        keys.append(f"{path.resolve()}|{algorithm}")
    with _LOCK:
        cache = _load()
    digests, missing = [], []
    for i, (key, stamp) in enumerate(zip(keys, stamps, strict=True)):
        hit = cache.get(key)
        digests.append(hit["digest"] if hit and hit["stamp"] == stamp and not _REHASH else None)
        if digests[-1] is None:
            missing.append(i)
    _COUNTS["cached"] += len(paths) - len(missing)
    _COUNTS["hashed"] += len(missing)
    if not missing:
        return digests
    for i in _progress(missing, progress):
        digests[i] = file_digest(paths[i], algorithm)
    with _LOCK:
        cache = _load()
        for i in missing:
            cache[keys[i]] = {"stamp": stamps[i], "digest": digests[i]}
        tmp = _cache_file().with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(_cache_file())
    return digests


def _progress(items: list, description: str | None):
    if description is None or len(items) < 200:
        return items
    from rich.progress import track

    # not drawn where nobody watches (a log file would keep an empty line of it)
    return track(items, description=description, transient=True, disable=not sys.stdout.isatty())


def verify(path: Path, expected: str, *, algorithm: str = "sha256", how_to_get: str = "") -> str:
    """Raise DataError unless ``path`` exists and has the expected digest."""
    if not path.is_file():
        raise DataError(f"{path} is missing. {how_to_get}".strip())
    digest = cached_digest(path, algorithm)
    if digest != expected:
        raise DataError(
            f"{path} is truncated or altered: its {algorithm.upper()} is {digest}, expected "
            f"{expected} ({path.stat().st_size} bytes on disk). {how_to_get}".strip()
        )
    return digest


def fingerprint(digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}\0{digests[name]}\n".encode())
    return h.hexdigest()


def manifest(folder: Path, name: str = "SHA256SUMS") -> dict[str, str]:
    """``sha256sum`` output in ``folder`` as {relative path: digest}; empty if there is none."""
    path = folder / name
    if not path.is_file():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, rel = line.split(None, 1)
            rel = rel.strip().removeprefix("*")  # sha256sum's binary-mode mark
            entries[rel.removeprefix("./")] = digest  # `find . | xargs sha256sum` writes ./name
    return entries


def verify_files(paths: list[Path], folder: Path, *, how_to_get: str = "") -> dict[str, str]:
    """Digests of ``paths``, each checked against ``folder``'s SHA256SUMS where it lists it."""
    listed = manifest(folder)
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} is missing. {how_to_get}".strip())
    rels = [str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in paths]
    digests = dict(zip(rels, cached_digests(paths, progress=f"verifying {len(paths)} files in {folder.name}"),
                       strict=True))
    for path, rel in zip(paths, rels, strict=True):
        if rel in listed and digests[rel] != listed[rel]:
            raise DataError(
                f"{path} is truncated or altered: its SHA256 is {digests[rel]}, expected {listed[rel]} "
                f"({path.stat().st_size} bytes on disk). {how_to_get}".strip()
            )
    return digests


def check_folder(folder: Path) -> int:
    """Every file ``folder``'s SHA256SUMS lists, present and with its digest; how many."""
    listed = manifest(folder)
    if not listed:
        raise DataError(f"{folder} has no SHA256SUMS to check against")
    verify_files([folder / rel for rel in sorted(listed)], folder,
                 how_to_get="Restore it from the data set's download (`convrepro-data download …`).")
    return len(listed)
