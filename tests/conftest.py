"""Shared fixtures: the real data root, and isolation of caches and stores per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("CONVREPRO_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def require_data(relative: str) -> Path:
    """The data set's folder, or skip (fail under CONVREPRO_REQUIRE_DATA=1, as in CI)."""
    path = DATA_ROOT / relative
    if not path.exists():
        message = f"data set {path} is absent (set CONVREPRO_DATA_DIR to the data root)"
        if os.environ.get("CONVREPRO_REQUIRE_DATA") == "1":
            pytest.fail(message + " and CONVREPRO_REQUIRE_DATA=1 says it must be there")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Checksum and feature caches of the tests never mix with a user's.
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("CONVREPRO_CACHE_DIR")
    os.environ["CONVREPRO_CACHE_DIR"] = str(cache)
    # Prepared image stores too (the data root may be read-only).
    os.environ["CONVREPRO_PREPARED_DIR"] = str(tmp_path_factory.mktemp("prepared"))
    os.environ.setdefault("CONVREPRO_DATA_DIR", str(DATA_ROOT))
    yield cache
    if old is None:
        os.environ.pop("CONVREPRO_CACHE_DIR", None)
    else:
        os.environ["CONVREPRO_CACHE_DIR"] = old


@pytest.fixture
def usps_dir() -> Path:
    return require_data("usps")


@pytest.fixture(scope="session")
def imagenette_store():
    """Imagenette prepared at 73 x 73 (the tiny AlexNet runs' image size), once per session."""
    require_data("imagenette2-224")
    from convrepro.data.images.prepare import prepare

    return prepare("imagenette2-224", 73, workers=2, progress=False)
