"""The SQLite tracking store on first use, broken, or missing: real stores, real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from convrepro.errors import TrackingError
from convrepro.report.build import main as report_main
from convrepro.tracking.store import check

REPO = Path(__file__).resolve().parents[1]
FIRST_USE = """
import sys
from mlflow.tracking import MlflowClient
from convrepro.tracking.store import check
uri = sys.argv[1]
check(uri)
client = MlflowClient(uri)
try:
    exp = client.create_experiment("race")
except Exception:
    exp = client.get_experiment_by_name("race").experiment_id
client.set_terminated(client.create_run(exp).info.run_id)
"""


@pytest.mark.slow
def test_four_processes_can_start_on_a_store_that_does_not_exist_yet(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    jobs = [subprocess.Popen([sys.executable, "-c", FIRST_USE, uri], cwd=REPO, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    errors = [job.communicate(timeout=300)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0, 0], "\n".join(e[-1500:] for e in errors)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_corrupt_or_half_initialised_store_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 500)
    with pytest.raises(TrackingError, match=r"corrupt.db is not a usable SQLite database: file is not a database"):
        check(f"sqlite:///{corrupt}")
    half = tmp_path / "half.db"
    with sqlite3.connect(half) as db:  # what an interrupted alembic migration leaves behind
        db.execute("create table experiments (id integer)")
        db.execute("create table _alembic_tmp_tags (key text)")
    with pytest.raises(TrackingError, match=r"half.db is half-initialised \(its first use was interrupted\): move "
                                            r".*half.db aside .* `mlflow db upgrade sqlite:///.*half.db`"):
        check(f"sqlite:///{half}")


def test_reading_tools_refuse_a_missing_store_instead_of_creating_one(tmp_path, capsys):
    missing = tmp_path / "nowhere.db"
    assert report_main(["--uri", f"sqlite:///{missing}", "--out", str(tmp_path / "reports")]) == 2
    assert f"error: there is no tracking store at {missing}" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "reports").exists()


def test_a_read_only_store_is_one_line_before_any_run(tmp_path, monkeypatch):
    """(Simulated: these tests run as root, for whom every file is writable.)  MLflow's own
    answer was 218 lines and 5 tracebacks; readers may still read it."""
    import convrepro.tracking.store as store

    db = tmp_path / "mlflow.db"
    check(f"sqlite:///{db}")  # a real store
    monkeypatch.setattr(store.os, "access", lambda path, mode: not (str(path) == str(db) and mode == store.os.W_OK))
    with pytest.raises(TrackingError, match=rf"^the tracking store {db} is read-only for this user: .*MLFLOW_TRACKING_URI"):
        check(f"sqlite:///{db}")
    check(f"sqlite:///{db}", must_exist=True)  # the report, summary and compare only read
