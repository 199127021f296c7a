"""Which tracking store a run writes to, and whether its output folder can be written: both
checked before any training starts (and before MLflow is imported)."""

from __future__ import annotations

import fcntl
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


def check(uri: str, timeout: float = 5.0, must_exist: bool = False) -> None:
    """Fail fast with one clear message instead of an hour of training and a lost run.

    ``must_exist``: for the tools that read runs (a missing SQLite store is an error, not a
    new empty one)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise TrackingError(f"tracking URI {uri!r} has no host (expected e.g. http://127.0.0.1:5000)")
        _check_server(uri.rstrip("/"), parsed.netloc, timeout)
    elif parsed.scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingError(f"tracking URI {uri!r} is malformed: use sqlite:///<absolute path>")
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            raise TrackingError(f"tracking URI {uri!r} must name an absolute path (sqlite:////abs/path or "
                                f"sqlite:///{Path.cwd() / path})")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise TrackingError(f"the folder of the tracking store {path} does not exist or is not writable")
        if not must_exist and path.is_file() and not os.access(path, os.W_OK):
            raise TrackingError(f"the tracking store {path} is read-only for this user: a run could not be "
                                "recorded; make it writable, or point MLFLOW_TRACKING_URI / logger.tracking_uri "
                                "at a store you can write")
        if must_exist and not path.is_file():
            raise TrackingError(f"there is no tracking store at {path}: train a run first (`make reproduce-lecun1989`) "
                                "or point --uri / MLFLOW_TRACKING_URI at an existing store")
        with _first_use_lock(path):
            _check_sqlite(uri, path, timeout)
    elif parsed.scheme in ("postgresql", "mysql", "mssql", "databricks", "file"):
        return
    else:
        raise TrackingError(
            f"tracking URI {uri!r} is malformed: expected http(s)://host:port for a server or "
            f"sqlite:///<absolute path> for an embedded store"
        )


def _check_server(uri: str, host: str, timeout: float) -> None:
    """Reachable, and answering the API calls a run makes (``/health`` alone passed while every
    write was refused for its Host header or its missing credentials)."""
    import base64
    import json

    try:
        urllib.request.urlopen(f"{uri}/health", timeout=timeout).read()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise TrackingError(
            f"tracking server {uri} is unreachable ({getattr(err, 'reason', err)}). Start it "
            f"(`make mlflow-server`), fix MLFLOW_TRACKING_URI / logger.tracking_uri, or unset it "
            f"to use the embedded store."
        ) from None
    request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        # A loaded server checking a password (PBKDF2) can take seconds: more time than /health.
        json.loads(urllib.request.urlopen(request, timeout=max(timeout, 60)).read() or b"{}")
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        if err.code == 401:
            raise TrackingError(
                f"tracking server {uri} refused the user {user!r}: check MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD" if user else f"tracking server {uri} needs a user and password: set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        if err.code == 403 and "host" in body.lower():
            raise TrackingError(
                f"tracking server {uri} refuses requests addressed to {host!r} (MLflow's allowed hosts): start "
                f"it with `make mlflow-server` (it allows this machine's names) or add ALLOWED_HOSTS={host}") from None
        raise TrackingError(f"tracking server {uri} answered {err.code} {err.reason} to a read of its "
                            f"experiments: {body.strip()[:200]}") from None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise TrackingError(f"tracking server {uri} does not answer like an MLflow server ({err})") from None


class _first_use_lock:
    """An exclusive lock beside the store (``<store>.lock``) for its first use: MLflow creates
    and migrates a new SQLite store's tables on the first connection, and two processes doing
    it at once broke it (alembic errors, a half-migrated store every later command failed on).
    One process initialises; the others wait, then find it ready."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        self.file = open(self.path, "a")  # noqa: SIM115 (held for the with-block)
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _check_sqlite(uri: str, path: Path, timeout: float) -> None:
    repair = (f"move {path} aside and start again with a new store, or repair it with "
              f"`mlflow db upgrade {uri}` (keep a copy first)")
    try:
        with sqlite3.connect(path, timeout=timeout) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
            version = (db.execute("select version_num from alembic_version").fetchall()
                       if "alembic_version" in tables else [])
    except sqlite3.DatabaseError as err:
        raise TrackingError(f"tracking store {path} is not a usable SQLite database: {err}") from None
    if tables and (any(t.startswith("_alembic_tmp_") for t in tables) or len(version) != 1):
        raise TrackingError(f"tracking store {path} is half-initialised (its first use was interrupted): {repair}")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:  # creates and migrates the tables of a new store (under the lock), verifies an old one's
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as err:
        raise TrackingError(f"tracking store {path} cannot be used: {str(err).splitlines()[0]} ({repair})") from None


def add_uri_argument(parser) -> None:
    """``--uri`` for the command-line tools: $MLFLOW_TRACKING_URI, else the project's store."""
    parser.add_argument("--uri", default=default_uri(),
                        help="tracking URI (default: $MLFLOW_TRACKING_URI or the project's mlflow.db)")


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TrackingError(f"output directory {folder} is not writable ({err.strerror}); "
                            f"set hydra.run.dir (or paths.root) to a writable folder") from None
