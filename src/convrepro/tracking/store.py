"""Which tracking store a run writes to, checked before any training starts."""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from convrepro.errors import TrackingError
from convrepro.paths import PROJECT_ROOT


def default_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's embedded SQLite store (``<project>/mlflow.db``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def resolve_uri(configured: str | None = None) -> str:
    """The config value (``logger.tracking_uri``), else the default; checked."""
    uri = configured or default_uri()
    check(uri)
    return uri


def check(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one clear message instead of an hour of training and a lost run."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise TrackingError(f"tracking URI {uri!r} has no host (expected e.g. http://127.0.0.1:5000)")
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).read()
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise TrackingError(
                f"tracking server {uri} is unreachable ({getattr(err, 'reason', err)}). Start it "
                f"(`make mlflow-server`), fix MLFLOW_TRACKING_URI / logger.tracking_uri, or unset it "
                f"to use the embedded store."
            ) from None
    elif parsed.scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingError(f"tracking URI {uri!r} is malformed: use sqlite:///<absolute path>")
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            raise TrackingError(f"tracking URI {uri!r} must name an absolute path (sqlite:////abs/path or "
                                f"sqlite:///{Path.cwd() / path})")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise TrackingError(f"the folder of the tracking store {path} does not exist or is not writable")
        try:
            with sqlite3.connect(path, timeout=timeout) as db:
                db.execute("select 1")
        except sqlite3.DatabaseError as err:
            raise TrackingError(f"tracking store {path} is not a usable SQLite database: {err}") from None
    elif parsed.scheme in ("postgresql", "mysql", "mssql", "databricks", "file"):
        return
    else:
        raise TrackingError(
            f"tracking URI {uri!r} is malformed: expected http(s)://host:port for a server or "
            f"sqlite:///<absolute path> for an embedded store"
        )


def add_uri_argument(parser) -> None:
    """``--uri`` for the command-line tools: $MLFLOW_TRACKING_URI, else the project's store."""
    parser.add_argument("--uri", default=default_uri(),
                        help="tracking URI (default: $MLFLOW_TRACKING_URI or the project's mlflow.db)")
