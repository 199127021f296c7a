"""Where data and caches live.

The data root comes from ``CONVREPRO_DATA_DIR`` (or a config value); in development and
CI it is ``../shared/data`` beside the checkout.  Caches (checksums already verified,
feature tensors) go under ``CONVREPRO_CACHE_DIR`` (default ``~/.cache/convrepro``), never
into the data root, which may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

from convrepro.errors import DataError

DEFAULT_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    # Not only a direct call: a run's config reads the variable too (paths.data), and hands its empty value on.
    if not root and os.environ.get("CONVREPRO_DATA_DIR", None) == "":
        raise DataError("CONVREPRO_DATA_DIR is set but empty: set it to the data root (the folder that holds "
                        "usps/, speech/ and imagenette2-224/), or unset it for the default "
                        f"{DEFAULT_ROOT}")
    chosen = root or os.environ.get("CONVREPRO_DATA_DIR") or DEFAULT_ROOT
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise DataError(
            f"data root {path} does not exist. Set CONVREPRO_DATA_DIR (or data.root=...) to the "
            f"folder that holds usps/, speech/ and imagenette2-224/, or fetch a data set into "
            f"it with `convrepro-data download <name> --root {path}`."
        )
    return path


def prepared_root(root: str | os.PathLike | None = None) -> Path:
    """Where prepared image stores live: ``CONVREPRO_PREPARED_DIR``, else ``<data root>/prepared``."""
    chosen = os.environ.get("CONVREPRO_PREPARED_DIR")
    return Path(chosen).expanduser().resolve() if chosen else data_root(root) / "prepared"


def cache_dir() -> Path:
    path = Path(os.environ.get("CONVREPRO_CACHE_DIR", Path.home() / ".cache" / "convrepro"))
    path.mkdir(parents=True, exist_ok=True)
    return path
