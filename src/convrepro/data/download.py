"""Fetch public files into the data root, verified, with a progress bar; nothing half-written."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from convrepro.errors import DataError

from .integrity import file_digest


def fetch(url: str, destination: Path, expected: str | None, *, algorithm: str = "sha256",
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` unless a verified copy is already there.

    The file is written next to its destination under a temporary name and moved into
    place only after its checksum matches, so an interrupted or corrupted download never
    leaves a file that looks complete.  ``expected=None`` (a source that publishes no
    checksum) only guarantees that the download completed.
    """
    if destination.is_file() and (expected is None or file_digest(destination, algorithm) == expected):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise DataError(
            f"could not download {url}: {getattr(err, 'reason', err)}. Check the network, or copy "
            f"the file to {destination} by hand."
        ) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.",
                                     delete=False) as tmp, response:
        tmp_path = Path(tmp.name)
        try:
            with Progress(TextColumn(destination.name), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), transient=True) as progress:
                task = progress.add_task("download", total=total)
                while block := response.read(1 << 16):
                    tmp.write(block)
                    progress.update(task, advance=len(block))
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
    digest = file_digest(tmp_path, algorithm)
    if total is not None and tmp_path.stat().st_size != total:
        tmp_path.unlink(missing_ok=True)
        raise DataError(f"download of {url} stopped after {tmp_path.stat().st_size} of {total} bytes; "
                        f"nothing was written to {destination}; try again.")
    if expected is not None and digest != expected:
        tmp_path.unlink(missing_ok=True)
        raise DataError(
            f"download of {url} is corrupt: {algorithm.upper()} {digest}, expected {expected}. "
            f"Nothing was written to {destination}; try again."
        )
    shutil.move(tmp_path, destination)
    return destination


def extract(archive: Path, into: Path, wanted: Callable[[str], bool]) -> None:
    """Extract the regular files of a tar archive whose names ``wanted`` accepts (no links,
    nothing outside ``into``: tarfile's "data" filter); a broken archive is a DataError."""
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and wanted(m.name)]
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{archive} is not a readable archive ({err}); it was deleted, download again") from None


def write_manifest(folder: Path, name: str = "SHA256SUMS") -> Path:
    """``sha256sum``-format digests of every file under ``folder``: what later uses verify against."""
    from .integrity import cached_digests

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != name)
    digests = cached_digests(files, progress=f"recording checksums of {len(files)} files")
    (folder / name).write_text("".join(f"{d}  {p.relative_to(folder)}\n" for d, p in zip(digests, files,
                                                                                          strict=True)))
    return folder / name
