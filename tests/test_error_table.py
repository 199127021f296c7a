"""The tools' mistakes, as a table: each gives its exit status and one line on stderr, never a
traceback, and leaves no store behind where none was (training's own mistakes are the table in
test_pipeline.py::test_config_errors_fail_before_any_run; docs/errors.md lists both)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from convrepro.cli import data_main
from convrepro.report.build import main as report_main
from convrepro.report.cli import main as summary_main
from convrepro.report.compare import main as compare_main
from convrepro.rerun import main as rerun_main
from convrepro.server import main as server_main
from convrepro.tracking.runs_cli import main as runs_main
from convrepro.tracking.store import check

TOOLS = {"summary": summary_main, "compare": compare_main, "rerun": rerun_main, "report": report_main,
         "server": server_main, "runs": runs_main, "data": data_main}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("stores")
    corrupt = tmp / "corrupt.db"
    corrupt.write_bytes(b"not a database at all" * 300)
    half = tmp / "half.db"
    with sqlite3.connect(half) as db:
        db.execute("create table runs (id text)")
        db.execute("create table _alembic_tmp_runs (id text)")
    empty = f"sqlite:///{tmp / 'empty.db'}"
    check(empty)  # an initialised store with no runs
    return {"MISSING": f"sqlite:///{tmp / 'missing.db'}", "CORRUPT": f"sqlite:///{corrupt}",
            "HALF": f"sqlite:///{half}", "EMPTY": empty, "RELATIVE": "sqlite:///relative/path.db",
            "DOWN": "http://127.0.0.1:9", "ODD": "ftp://example.org/store", "NOHOST": "http://"}


CASES = [
    ("summary", ["lecun89", "--uri", "EMPTY"], 2, "no paper or experiment named 'lecun89'"),
    ("summary", ["lecun1989", "--uri", "MISSING"], 2, "there is no tracking store at"),
    ("summary", ["lecun1989", "--uri", "CORRUPT"], 2, "is not a usable SQLite database: file is not a database"),
    ("summary", ["lecun1989", "--uri", "HALF"], 2, "is half-initialised (its first use was interrupted)"),
    ("summary", ["lecun1989", "--uri", "RELATIVE"], 2, "must name an absolute path"),
    ("summary", ["lecun1989", "--uri", "DOWN"], 2, "tracking server http://127.0.0.1:9 is unreachable"),
    ("summary", ["lecun1989", "--uri", "ODD"], 2, "is malformed: expected http(s)://host:port"),
    ("summary", ["lecun1989", "--uri", "NOHOST"], 2, "has no host"),
    ("compare", ["abc", "def", "--uri", "MISSING"], 2, "there is no tracking store at"),
    ("compare", ["nope", "nada", "--uri", "EMPTY"], 2, "no run whose id begins with 'nope'"),
    ("compare", ["abc", "def", "--uri", "CORRUPT"], 2, "is not a usable SQLite database"),
    ("compare", ["abc", "def", "--uri", "DOWN"], 2, "is unreachable"),
    ("rerun", ["nope", "--uri", "EMPTY"], 2, "no run whose id begins with 'nope'"),
    ("rerun", ["nope", "--uri", "MISSING"], 2, "there is no tracking store at"),
    ("rerun", ["nope", "--uri", "HALF"], 2, "is half-initialised"),
    ("report", ["--uri", "MISSING", "--out", "OUT"], 2, "there is no tracking store at"),
    ("report", ["--uri", "CORRUPT", "--out", "OUT"], 2, "is not a usable SQLite database"),
    ("report", ["--uri", "DOWN", "--out", "OUT"], 2, "is unreachable"),
    ("runs", ["clean", "--uri", "MISSING"], 2, "there is no tracking store at"),
    ("runs", ["clean", "--uri", "CORRUPT"], 2, "is not a usable SQLite database"),
    ("server", ["--host", "0.0.0.0", "--folder", "OUT", "--dry-run"], 2, "without authentication lets anyone"),
    ("data", ["prepare", "imagenette", "--size", "0", "--root", "OUT"], 2, "--size 0: the stored images need a "
                                                                          "positive side"),
    ("data", ["check", "usps", "--root", "NOWHERE"], 2, "does not exist. Set CONVREPRO_DATA_DIR"),
    ("data", ["prepare", "imagenette", "--size", "146", "--root", "NOWHERE"], 2, "does not exist"),
]


@pytest.mark.parametrize("tool,argv,status,message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_mistake_is_one_line(tool, argv, status, message, stores, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    places = {"OUT": str(tmp_path / "out"), "NOWHERE": str(tmp_path / "nowhere")}
    capsys.readouterr()
    assert TOOLS[tool]([stores.get(a, places.get(a, a)) for a in argv]) == status
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not Path(stores["MISSING"][len("sqlite:///"):]).exists()  # a tool that reads never creates a store
