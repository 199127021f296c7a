"""The dashboard for real: a standalone `mlflow server`, a tiny run logged to it over HTTP,
checked through the REST API and in the UI rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, require_data

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "headless Chromium is not installed (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CONVREPRO_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def seen_at_1400_px(url: str, folder: Path, budget_ms: int = 30000) -> tuple[str, Path]:
    """The page as a 1,400 x 1,000 browser window shows it: its DOM, and a screenshot kept in
    ``folder`` for a person to look at."""
    window = [_chromium(), *CHROMIUM_FLAGS, "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}"]
    dom = subprocess.run([*window, f"--user-data-dir={folder / 'c1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180).stdout
    picture = folder / "seen.png"
    subprocess.run([*window, f"--user-data-dir={folder / 'c2'}", f"--screenshot={picture}", url],
                   capture_output=True, timeout=180)
    assert picture.stat().st_size > 10_000
    return dom, picture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, endpoint: str, **params) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _serve(cmd: list[str], base: str, log: Path, env: dict | None = None):
    """Start a server process and wait for its /health; yields it, then stops its group."""
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env, cwd=REPO)
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{base}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("mlflow server did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    base = f"http://127.0.0.1:{port}"
    for _ in _serve([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                     "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts",
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], base, tmp_path / "server.log"):
        yield base


def test_run_logged_to_a_server_is_in_the_rest_api_and_the_ui(server, tmp_path):
    require_data("usps")
    chromium = _chromium()
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": server}
    result = subprocess.run(
        [sys.executable, "-m", "convrepro.train", "experiment=lecun1989", "trainer.max_epochs=1",
         "data.train_subset=200", "seed=4", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={tmp_path}/outputs/run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    experiment = _get(server, "experiments/get-by-name", experiment_name="lecun1989")["experiment"]
    runs = _post(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == "faithful-sgd-seed4"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["seed"] == "4" and params["data.count.train"] == "200"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert 0 < metrics["test/error"] < 100
    history = _get(server, "metrics/get-history", run_id=run["info"]["run_id"], metric_key="test/error")
    assert [m["step"] for m in history["metrics"]] == [1]
    listed = _get(server, "artifacts/list", run_id=run["info"]["run_id"])["files"]
    assert {"config.yaml", "figures", "metrics"} <= {f["path"] for f in listed}
    figures = _get(server, "artifacts/list", run_id=run["info"]["run_id"], path="figures")["files"]
    assert "figures/learning_curves.png" in {f["path"] for f in figures}
    # The artifacts themselves went to the server's artifact store, not to the client's disk.
    assert any((tmp_path / "artifacts").rglob("learning_curves.png"))

    page = f"{server}/#/experiments/{experiment['experiment_id']}/runs"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}",
                          "--virtual-time-budget=30000", "--dump-dom", page],
                         capture_output=True, text=True, timeout=180).stdout
    assert "Runs - Experiment" in dom, dom[-2000:]
    assert "faithful-sgd-seed4" in dom
    assert "test/error" not in dom  # MLflow's own default: no metric columns

    # The link `convrepro-runs links` prints: the same table with the paper's measures.
    from convrepro.tracking.runs import dashboard_url

    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-shared'}",
                          "--virtual-time-budget=30000", "--dump-dom",
                          dashboard_url(server, experiment["experiment_id"])],
                         capture_output=True, text=True, timeout=180).stdout
    assert "faithful-sgd-seed4" in dom, dom[-2000:]
    assert "shared view" in dom  # MLflow's banner: the view came from the experiment's tag
    # In MLflow's model-training mode (the link's workflowType), not its GenAI one: the sidebar
    # reads Runs / Models / Traces, without Sessions, Judges and Prompts.
    assert ">Models<" in dom and ">Runs<" in dom, dom[-2000:]
    assert not [w for w in (">Prompts<", ">Judges<", ">Sessions<") if w in dom], dom[-2000:]
    # The grid draws only the columns in sight (metric columns in name order): the first is there.
    assert 'col-id="metrics.`test/error`"' in dom, dom[-3000:]
    assert f">{metrics['test/error']!r}"[:7] in dom


def test_a_team_server_beyond_localhost_needs_a_login_and_accepts_its_own_host_names(tmp_path, monkeypatch):
    """`make mlflow-server HOST=0.0.0.0` with MLFLOW_AUTH_ADMIN_PASSWORD: reached under the machine's
    own address (not loopback) a run's calls pass MLflow's host check; anonymous writes are
    refused; the pre-flight names what is missing in one line; a logged-in run finishes."""
    from convrepro.errors import TrackingError
    from convrepro.server import outward_address
    from convrepro.tracking.store import check

    require_data("usps")
    address = outward_address() or "127.0.0.1"
    port = _free_port()
    base = f"http://{address}:{port}"
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-Password-1", "PORT": str(port), "HOST": "0.0.0.0"}
    for _ in _serve([sys.executable, "-m", "convrepro.server", "--folder", str(tmp_path / "srv")], base,
                    tmp_path / "server.log", env):
        body = json.dumps({"name": "vandal"}).encode()
        anonymous = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/create", data=body,
                                           headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=30)
        assert refused.value.code == 401
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(TrackingError, match="needs a user and password: set MLFLOW_TRACKING_USERNAME"):
            check(base)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(TrackingError, match="refused the user 'admin'"):
            check(base)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-long-Password-1")
        check(base)
        with pytest.raises(TrackingError, match=r"refuses requests addressed to '127.0.0.2:\d+' \(MLflow's allowed"):
            check(f"http://127.0.0.2:{port}")  # a name the server was not told to allow
        run_env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": base}
        result = subprocess.run(
            [sys.executable, "-m", "convrepro.train", "experiment=lecun1989", "trainer.max_epochs=1",
             "data.train_subset=100", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/o"],
            cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(base)
        (run,) = client.search_runs([client.get_experiment_by_name("lecun1989").experiment_id])
        assert run.info.status == "FINISHED" and run.info.user_id == "admin"
    assert not (tmp_path / "srv" / "basic_auth.ini").read_text().count("a-long-Password-1")  # not on disk


def test_a_server_beyond_localhost_without_a_password_is_refused_unless_asked_for(tmp_path, capsys):
    from convrepro.server import main as server_main

    assert server_main(["--host", "0.0.0.0", "--folder", str(tmp_path), "--dry-run"]) == 2
    assert "without authentication lets anyone on the network read, write and delete" in capsys.readouterr().err
    assert server_main(["--host", "0.0.0.0", "--folder", str(tmp_path), "--dry-run", "--no-auth"]) == 0
    out = capsys.readouterr().out
    assert "--allowed-hosts" in out and "--app-name" not in out


SERVER_DIES_AT_THIRD_PASS = """
import os, signal, sys
from convrepro.train import main
from convrepro.training.task import ClassifierTask
server_group, real_start = int(sys.argv.pop(1)), ClassifierTask.on_train_epoch_start
def start(self):
    if self.current_epoch == 2:  # passes 1 and 2 are written and checkpointed
        os.killpg(server_group, signal.SIGKILL)
    return real_start(self)
ClassifierTask.on_train_epoch_start = start
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


def test_a_server_that_dies_mid_run_ends_it_within_its_patience_and_resume_auto_continues(tmp_path):
    """The server is killed as the third of four passes begins: the run ends by itself within
    ``logger.patience_s`` with one line, and once a server answers on the same store again,
    ``resume=auto`` finishes it with every pass's metrics written once."""
    require_data("usps")
    port, mlflow = _free_port(), str(Path(sys.executable).with_name("mlflow"))
    base = f"http://127.0.0.1:{port}"
    serve = [mlflow, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
             str(tmp_path / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args = ["experiment=lecun1989", "trainer.max_epochs=4", "data.train_subset=300", "seed=4",
            "trainer.enable_progress_bar=false", "training.checkpoint_min_interval_s=0", "logger.patience_s=12",
            f"hydra.run.dir={tmp_path}/outputs/run"]
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": base}
    for proc in _serve(serve, base, tmp_path / "server.log"):
        start = time.monotonic()
        died = subprocess.run([sys.executable, "-c", SERVER_DIES_AT_THIRD_PASS, str(proc.pid), *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
        # From the kill to the exit: the third pass (~1 s), then the bounded retries of one write.
        seconds = time.monotonic() - start
    assert died.returncode == 2, died.stderr[-3000:]
    lines = [line for line in died.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: the tracking server {base} stopped answering"), lines
    assert "stays RUNNING there and its checkpoint" in lines[0] and "resume=auto" in lines[0]
    print(f"server killed; the run ended {seconds:.1f} s after it began")
    assert seconds < 120, seconds  # MLflow's own retries held it ~14 minutes

    for _ in _serve(serve, base, tmp_path / "server-again.log"):
        resumed = subprocess.run([sys.executable, "-m", "convrepro.train", *args, "resume=auto"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming run" in resumed.stdout
        experiment = _get(base, "experiments/get-by-name", experiment_name="lecun1989")["experiment"]
        (run,) = _post(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert run["info"]["status"] == "FINISHED"
        for key in ("test/error", "train/running_loss"):
            history = _get(base, "metrics/get-history", run_id=run["info"]["run_id"], metric_key=key)["metrics"]
            assert sorted(m["step"] for m in history) == [1, 2, 3, 4], (key, history)


def test_the_printed_link_at_1400_px_shows_the_seed_the_headline_and_sweep_parents_with_values(server, tmp_path):
    """The runs table as a user first sees it through `make mlflow-ui`'s link, on a 1,400 px wide
    window: the seed and the paper's headline measure are drawn (the grid draws only the columns
    in sight), sweep parents carry their mean under the children's metric names, and MLflow is in
    its model-training mode.  A screenshot is kept beside the DOM for a person to look at."""
    require_data("usps")
    _chromium()  # skip (or fail in CI) before training when there is no browser
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": server}
    sweep = subprocess.run(
        [sys.executable, "-m", "convrepro.train", "-m", "experiment=lecun1989", "seed=1,2", "trainer.max_epochs=1",
         "data.train_subset=200", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    from convrepro.tracking.runs import dashboard_url

    experiment = _get(server, "experiments/get-by-name", experiment_name="lecun1989")["experiment"]
    link = dashboard_url(server, experiment["experiment_id"])
    dom, _ = seen_at_1400_px(link, tmp_path)
    for column in ("params.`seed`", "metrics.`test/error`", "attributes.`Run Name`"):
        assert f'col-id="{column}"' in dom, (column, dom[-2000:])
    names = re.findall(r'class="css-[a-z0-9]+">(faithful-[a-z0-9-]+)</span>', dom)
    assert names == [n for n in names if "-sweep-" in n] and len(names) == 1, names  # the children fold under it
    values = re.findall(r'id="cell-metrics\.`test/error`-\d+" class="ag-cell-value">([^<]*)<', dom)
    assert len(values) == 1 and 0 < float(values[0]) < 100, values  # the parent's row has its mean
    assert ">Models<" in dom and not [w for w in (">Prompts<", ">Judges<", ">Sessions<") if w in dom]
