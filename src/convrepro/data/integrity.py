"""Checksums: verified on first use, then trusted while size and mtime are unchanged.

Hashing the 1.3 GB of Imagenette on every run would cost more than a LeCun training run,
so each verified file's (size, mtime_ns, digest) is remembered in the cache directory.
A run's dataset fingerprint is the SHA-256 over the sorted (name, digest) pairs of its
files, logged as a tag so that two runs can be compared knowing they saw the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .errors import DataError
from .paths import cache_dir

_LOCK = threading.Lock()


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
    """The file's digest, computed once per (path, size, mtime)."""
    st = path.stat()
    key = f"{path.resolve()}|{algorithm}"
    stamp = [st.st_size, st.st_mtime_ns]
    with _LOCK:
        cache = _load()
        hit = cache.get(key)
        if hit and hit["stamp"] == stamp:
            return hit["digest"]
    digest = file_digest(path, algorithm)
    with _LOCK:
        cache = _load()
        cache[key] = {"stamp": stamp, "digest": digest}
        tmp = _cache_file().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(_cache_file())
    return digest


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
            entries[rel.lstrip("*").strip()] = digest
    return entries


def verify_files(paths: list[Path], folder: Path, *, how_to_get: str = "") -> dict[str, str]:
    """Digests of ``paths``, each checked against ``folder``'s SHA256SUMS where it lists it."""
    listed = manifest(folder)
    digests = {}
    for path in paths:
        rel = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
        if rel in listed:
            digests[rel] = verify(path, listed[rel], how_to_get=how_to_get)
        else:
            if not path.is_file():
                raise DataError(f"{path} is missing. {how_to_get}".strip())
            digests[rel] = cached_digest(path)
    return digests
