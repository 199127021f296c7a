"""The real pipeline: Hydra composition -> Lightning Trainer -> MLflow (a temporary SQLite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from convrepro.tracking.store import check

from .conftest import REPO, require_data

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`


def train(tmp_path: Path, *overrides: str, store: Path | None = None) -> subprocess.CompletedProcess:
    store = store or tmp_path / "mlflow.db"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    return subprocess.run(
        [sys.executable, "-m", "convrepro.train", *overrides, f"hydra.run.dir={tmp_path}/outputs/run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def client_before_training(store: Path) -> MlflowClient:
    """A client of a new store, made under the project's first-use lock before a process that
    trains into it starts: ``MlflowClient`` creates and migrates a new store's tables when it is
    made, and a training process checking the store meanwhile finds it half-initialised."""
    check(f"sqlite:///{store}")
    return MlflowClient(f"sqlite:///{store}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):

    require_data("usps")
    tmp = tmp_path_factory.mktemp("pipeline")
    result = train(tmp, "experiment=lecun1989", "trainer.max_epochs=2", "data.train_subset=1000", "seed=7",
                   "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lecun1989")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run, result, tmp


def test_run_is_named_and_finished(tiny_run):
    _, run, result, tmp = tiny_run
    assert run.info.run_name == "faithful-sgd-seed7"
    assert run.info.status == "FINISHED"
    assert "paper versus this run" in result.stdout
    # A user sees the passes and the table; nothing on stderr (no warnings, no library notes).
    assert [line for line in result.stderr.splitlines() if line.strip()] == []
    lines = result.stdout.splitlines()
    # Where the run goes and how to stop and continue it, before the first pass ...
    assert lines[0].startswith(f"run {run.info.run_id} (faithful-sgd-seed7) in sqlite:///")
    assert "on the CPU" in lines[0] and "precision 32-true" in lines[0] and "resume=auto continues it" in lines[0]
    # ... then one line per pass: loss, the error measures, the time left for the whole run.
    passes = [line for line in lines if line.startswith("pass ")]
    assert [p.split(" · ")[0] for p in passes] == ["pass 1/2", "pass 2/2"]
    assert "loss " in passes[0] and "test/error " in passes[0] and " left" in passes[0] and " left" not in passes[1]
    # ... and the run is found by `convrepro-runs list` with the id beginning the commands take.
    listed = subprocess.run([sys.executable, "-m", "convrepro.tracking.runs_cli", "list", "lecun1989", "--uri",
                             f"sqlite:///{tmp / 'mlflow.db'}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    row = listed.stdout.splitlines()[1].split()
    assert row[:4] == [run.info.run_id[:8], "lecun1989", "faithful-sgd-seed7", "FINISHED"]
    assert listed.stdout.rstrip().endswith(f"test/error {run.data.metrics['test/error']:.2f} %")


def test_the_dashboard_shows_a_training_experiment_with_the_papers_numbers(tiny_run):
    """MLflow 3 opens an experiment without a kind as a GenAI app; descriptions are markdown notes."""
    client, run, _, _ = tiny_run
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    note = experiment.tags["mlflow.note.content"]
    assert note.startswith("LeCun et al. 1989 (zip codes), re-run by convrepro") and "| measure | paper |" in note
    table = run.data.tags["mlflow.note.content"]
    assert "paper versus this run (faithful-sgd-seed7)" in table
    assert f"| {run.data.metrics['test/error']:.4g} |" in table
    # The runs table's shared view: the seed and the paper's measures as columns.
    view = json.loads(experiment.tags["mlflow.sharedViewState.convrepro"])
    # The headline measure, the curves' and the wall time: few enough that the seed stays in sight.
    assert view["selectedColumns"] == ["params.`seed`", "metrics.`test/error`", "metrics.`train/error`",
                                       "metrics.`time/total_seconds`"]


def test_links_name_each_experiments_shared_view(tiny_run, capsys):
    from convrepro.tracking.runs_cli import main

    client, run, _, tmp = tiny_run
    assert main(["links", "--uri", f"sqlite:///{tmp / 'mlflow.db'}", "--base", "http://h:5001/"]) == 0
    # the shared view, in MLflow's model-training mode (not its GenAI one)
    expected = (f"http://h:5001/#/experiments/{run.info.experiment_id}/runs?viewStateShareKey=convrepro"
                "&workflowType=machine_learning")
    assert capsys.readouterr().out.split() == ["lecun1989", expected]


def test_params_are_the_flattened_resolved_config(tiny_run):
    _, run, _, _ = tiny_run
    p = run.data.params
    assert p["model._target_"] == "convrepro.models.lecun1989.ZipCodeNet"
    assert p["model.nonlinearity"] == "scaled_tanh"
    assert p["trainer.max_epochs"] == "2"
    assert p["training.patterns_per_update"] == "1"
    assert p["optim.lr"] == "0.03"
    assert p["seed"] == "7"
    assert p["data.count.train"] == "1000" and p["data.count.test"] == "2007"


def test_tags_record_provenance(tiny_run):
    _, run, _, _ = tiny_run
    t = run.data.tags
    assert len(t["git.commit"]) == 40 or t["git.commit"] == "unknown"
    assert t["git.dirty"] in ("true", "false", "unknown")
    assert t["version.torch"].startswith("2.11.0")
    assert t["dataset.sha.usps/zip.train.gz"].startswith("66ebf231")
    assert len(t["dataset.fingerprint"]) == 64 and t["dataset.verified"] in ("hashed", "cached")
    assert "trainer.max_epochs=2" in t["hydra.overrides"]
    assert t["hydra.choice.optim"] == "sgd"
    assert t["device.accelerator"] == "cpu"


def test_metrics_per_pass_with_the_papers_names(tiny_run):
    client, run, _, _ = tiny_run
    for key in ("train/error", "test/error", "test/mse", "test/misses", "time/pass_seconds"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    test_error = client.get_metric_history(run.info.run_id, "test/error")[-1].value
    misses = client.get_metric_history(run.info.run_id, "test/misses")[-1].value
    assert test_error == pytest.approx(100 * misses / 2007)
    assert 0 < test_error < 60  # 2 passes over 1000 digits already learn something
    m = run.data.metrics
    assert 0 <= m["test/rejection_for_1pct_error"] <= 100
    assert m["time/total_seconds"] > 0 and m["throughput/patterns_per_second"] > 0


def test_artifacts_config_hydra_plots_checkpoint(tiny_run):
    client, run, _, tmp = tiny_run
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", ".hydra", "figures", "checkpoints", "metrics", "data"} <= names
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/learning_curves.png", "figures/confusion_test.png", "figures/first_layer_kernels.png",
            "figures/rejection_test.png"} <= figures
    hydra = {a.path for a in client.list_artifacts(run.info.run_id, ".hydra")}
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml"} <= hydra
    ckpt = client.download_artifacts(run.info.run_id, "checkpoints/last.ckpt", str(tmp / "dl"))
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state["model.h1.bias"].shape == (12, 8, 8)
    assert Path(run.info.artifact_uri.replace("file://", "")).is_relative_to(tmp)


@pytest.mark.parametrize("override,message", [
    ("model.nonlinearity=relu2", "model.nonlinearity='relu2' is not allowed: choose one of logistic, relu, scaled_tanh, tanh"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1 is not allowed: expected a positive integer"),
    ("optim=adamm", "Could not find 'optim/adamm'"),
    ("model.nonlinearty=tanh", "Could not override 'model.nonlinearty'"),
    ("experiment=lecun1898", "Could not find 'experiment/lecun1898'"),
    ("optim.lr=fast", "optim.lr='fast' is not allowed: expected a finite number > 0"),
    ("optim.lr=inf", "optim.lr=inf is not allowed: expected a finite number > 0"),
    ("data.train_subset=0", "data.train_subset=0 is not allowed: expected a positive integer (or null for the default)"),
    ("data.train_subset=-5", "data.train_subset=-5 is not allowed: expected a positive integer (or null for the default)"),
    ("data.train_subset=7292", "data.train_subset=7292 exceeds the 7,291 training patterns; give at most 7291"),
    ("trainer.precision=16-mixed", "trainer.precision=16-mixed needs a GPU (float16 autocast is CUDA's); on a CPU use trainer.precision=bf16-mixed"),
    ("trainer.precision=8-mixed", "trainer.precision='8-mixed' is not allowed: choose one of 32-true"),
    ("trainer=gpu", "trainer.accelerator=gpu but this machine has no CUDA GPU; run on the CPU with trainer=cpu"),
    ("trainer.accelerator=gpu", "trainer.accelerator=gpu but this machine has no CUDA GPU"),
    ("seed=-5", "seed=-5 is not allowed: expected an integer from 0 to 4294967295"),
    ("data.num_workers=-1", "data.num_workers=-1 is not allowed: expected an integer >= 0 (or null for the default)"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0 is not allowed: expected a positive integer"),
    ("training.matmul_precision=low", "training.matmul_precision='low' is not allowed: choose one of highest, high"),
    ("training.online_step=fast", "training.online_step='fast' is not allowed: choose one of pairs, autograd"),
    ("training.checkpoint_min_interval_s=-1", "training.checkpoint_min_interval_s=-1 is not allowed: expected a "
                                              "number >= 0"),
    ("trainer.max_epoch=1", "error: trainer.max_epoch is not an argument of Lightning's Trainer: did you mean "
                            "trainer.max_epochs?"),  # the project's hint, not Hydra's advice to add it with +
    ("+trainer.max_epoch=1", "trainer.max_epoch is not an argument of Lightning's Trainer: did you mean "
                             "trainer.max_epochs?"),
    ("+model.nonlinearty=tanh", "did you mean model.nonlinearity?"),
])
def test_config_errors_fail_before_any_run(tmp_path, override, message):
    import torch

    if override == "trainer=gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=gpu is no mistake here")

    require_data("usps")  # the data are read before a model is built
    result = train(tmp_path, "experiment=lecun1989", override)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    store = tmp_path / "mlflow.db"
    if store.exists():
        client = MlflowClient(f"sqlite:///{store}")
        exp = client.get_experiment_by_name("lecun1989")
        assert exp is None or client.search_runs([exp.experiment_id]) == []
    if "optim=adamm" == override:
        assert "Available options in 'optim'" in result.stderr and "sgd" in result.stderr


def test_a_mistyped_value_is_answered_before_mlflow_and_lightning_are_imported(tmp_path):
    # Their imports take ~10 s together: a config error must not wait for them.
    probe = ("import sys\n"
             "from convrepro import train\n"
             "sys.argv = ['convrepro-train', 'experiment=lecun1989', 'seed=-5', sys.argv[1]]\n"
             "try:\n    train.main()\nexcept SystemExit as exit:\n    code = exit.code\n"
             "print(code, sorted(m for m in ('mlflow', 'pytorch_lightning') if m in sys.modules))\n")
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", probe, f"hydra.run.dir={tmp_path}/o"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "seed=-5 is not allowed" in result.stderr
    assert result.stdout.split("\n")[-2] == "2 []"


def test_unreachable_tracking_server_fails_fast(tmp_path):

    require_data("usps")
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=lecun1989",
                             f"hydra.run.dir={tmp_path}/o"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr


@pytest.mark.parametrize("overrides,expected_metric", [
    (("experiment=lecun1989", "optim=sdlm", "training.curvature_patterns=100"), "sdlm/mean_curvature"),
    (("experiment=lecun1989_modern",), "test/loss"),
    (("experiment=lecun1989", "model.subsampling=decimation"), "test/error"),
])
def test_variants_run_end_to_end(tmp_path, overrides, expected_metric):

    require_data("usps")
    result = train(tmp_path, *overrides, "trainer.max_epochs=1", "data.train_subset=400",
                   "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lecun1989").experiment_id])
    assert run.info.status == "FINISHED"
    assert expected_metric in run.data.metrics
    assert 0 < run.data.metrics[expected_metric] < float("inf")


def test_tdnn_end_to_end_with_shift_curve(tmp_path):

    require_data("speech/fraser")
    result = train(tmp_path, "experiment=waibel1989", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                   "data.progress=false")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("waibel1989").experiment_id])
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    for key in ("train/error", "val/error", "test/error", "timit/error"):
        assert 0 <= m[key] <= 100
    assert {f"shift/test_accuracy_{s}" for s in range(-3, 4)} <= set(m)
    counts = client.download_artifacts(run.info.run_id, "data/counts.json", str(tmp_path))
    import json

    assert json.load(open(counts))["test"] == {"b": 119, "d": 186, "g": 67}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/shift_invariance.png" in figures


@pytest.mark.parametrize("overrides,message", [
    (("experiment=waibel1989", "data.corpus=timit2"), "data.corpus='timit2' is not known: choose one of fraser, arctic, table"),
    (("experiment=waibel1989", "model.output=softmax"), "model: output must be one of ('logistic', 'none'), got 'softmax'"),
    (("experiment=lecun1989", "optim=sdlm", "optim.mu=-1"), "optim: SDLM needs lr > 0 and mu > 0"),
    (("experiment=lecun1989", "data.root=/nonexistent"), "data root /nonexistent does not exist"),
])
def test_constructor_refusals_are_one_clear_message(tmp_path, overrides, message):

    require_data("speech/fraser" if "experiment=waibel1989" in overrides else "usps")
    result = train(tmp_path, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "InstantiationException" not in result.stderr


def test_sweep_is_a_parent_run_with_nested_children_and_aggregates(tmp_path):
    require_data("usps")
    result = train(tmp_path, "-m", "experiment=lecun1989", "seed=1,2", "trainer.max_epochs=1", "data.train_subset=200",
                   "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lecun1989")
    (parent,) = client.search_runs([exp.experiment_id], "tags.sweep = 'parent'")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["seed"] for c in children) == ["1", "2"]
    assert parent.info.status == "FINISHED"
    errors = [c.data.metrics["test/error"] for c in children]
    m = parent.data.metrics
    # under the children's own names, so that the dashboard's columns show them on the parent's row
    assert m["test/error_n"] == 2 and m["sweep/finished"] == 2
    assert m["test/error"] == pytest.approx(sum(errors) / 2)
    assert m["test/error_sd"] == pytest.approx(abs(errors[0] - errors[1]) / 2**0.5)
    assert "seed=1,2" in parent.data.tags["sweep.overrides"]
    # the sweep ends with its result, not only the last job's table
    end = result.stdout[result.stdout.index(f"sweep {parent.info.run_id}: 2 finished run(s)"):].splitlines()
    row = next(line.split() for line in end if line.strip().startswith("test/error"))
    assert row[:4] == ["test/error", f"{m['test/error']:.3f}", "±", f"{m['test/error_sd']:.3f}"] and row[-1] == "2)"


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_interrupted_run_ends_killed_not_running(tmp_path, signum):
    import signal
    import time

    require_data("usps")
    store = tmp_path / "mlflow.db"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    client = client_before_training(store)
    proc = subprocess.Popen([sys.executable, "-m", "convrepro.train", "experiment=lecun1989", "trainer.max_epochs=50",
                             "data.train_subset=1000", "trainer.enable_progress_bar=false",
                             f"hydra.run.dir={tmp_path}/o"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    run = None
    while time.time() < deadline and proc.poll() is None:  # wait until a pass has been logged
        time.sleep(1)
        exp = client.get_experiment_by_name("lecun1989")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and "test/error" in runs[0].data.metrics:
            run = runs[0]
            break
    assert run is not None, "no pass was logged in time"
    proc.send_signal(getattr(signal, signum))
    proc.wait(timeout=120)
    assert proc.returncode != 0
    final = client.get_run(run.info.run_id)
    assert final.info.status == "KILLED"
    assert final.data.tags["error"].startswith("interrupted")


def test_runs_clean_ends_runs_whose_process_is_gone(tmp_path, capsys):
    import socket

    from convrepro.tracking.runs_cli import main as runs_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lecun1989", artifact_location=(tmp_path / "a").as_uri())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = client.create_run(exp, tags={"process.host": socket.gethostname(), "process.pid": gone.stdout.strip()})
    alive = client.create_run(exp, tags={"process.host": socket.gethostname(), "process.pid": str(os.getpid())})
    elsewhere = client.create_run(exp, tags={"process.host": "another-machine", "process.pid": "1"})
    assert runs_main(["clean", "--uri", uri, "--dry-run"]) == 0
    assert client.get_run(dead.info.run_id).info.status == "RUNNING"
    assert runs_main(["clean", "--uri", uri]) == 0
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
    assert "is gone" in client.get_run(dead.info.run_id).data.tags["error"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # young: left alone
    assert runs_main(["clean", "--uri", uri, "--older-than-hours", "0"]) == 0
    assert client.get_run(elsewhere.info.run_id).info.status == "KILLED"
    assert "1 stale run(s)" in capsys.readouterr().out


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    import signal
    import time

    import torch

    require_data("usps")
    args = ("experiment=lecun1989", "trainer.max_epochs=4", "data.train_subset=800", "seed=5",
            "trainer.enable_progress_bar=false")
    # The uninterrupted reference, in its own store.
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    assert train(ref_dir, *args).returncode == 0
    ref_client = MlflowClient(f"sqlite:///{ref_dir / 'mlflow.db'}")
    (ref,) = ref_client.search_runs([ref_client.get_experiment_by_name("lecun1989").experiment_id])

    work = tmp_path / "work"
    work.mkdir()
    store = work / "mlflow.db"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(work), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    client = client_before_training(store)
    proc = subprocess.Popen([sys.executable, "-m", "convrepro.train", *args, f"hydra.run.dir={work}/o1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill -9 in the middle of the third pass
        time.sleep(0.2)
        exp = client.get_experiment_by_name("lecun1989")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "test/error")) >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (killed,) = client.search_runs([client.get_experiment_by_name("lecun1989").experiment_id])
    assert killed.info.status == "RUNNING"  # only kill -9 can leave this

    resumed = train(work, *args, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = client.search_runs([client.get_experiment_by_name("lecun1989").experiment_id])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for key in ("train/error", "test/error", "test/mse", "test/misses"):
        ours = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        theirs = [(m.step, m.value) for m in ref_client.get_metric_history(ref.info.run_id, key)]
        assert sorted(set(ours)) == sorted(theirs), key  # same values at the same passes
    weights = [torch.load(c.download_artifacts(r.info.run_id, "checkpoints/last.ckpt", str(tmp_path / n)),
                          map_location="cpu", weights_only=False)["state_dict"]
               for c, r, n in ((client, run, "a"), (ref_client, ref, "b"))]
    for name in weights[1]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_tdnn_staged_training_starts_on_a_few_tokens_per_class(tmp_path):
    require_data("speech/fraser")
    result = train(tmp_path, "experiment=waibel1989", "trainer.max_epochs=3", "trainer.enable_progress_bar=false",
                   "data.progress=false", "data.staged_tokens_per_class=10", "data.staged_passes=2")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("waibel1989").experiment_id])
    rid = run.info.run_id

    def per_pass(key):
        return [m.value for m in sorted(client.get_metric_history(rid, key), key=lambda m: m.step)]

    seen = [round(r * s) for r, s in zip(per_pass("throughput/train_patterns_per_second"),
                                         per_pass("time/pass_seconds"), strict=True)]
    assert seen[:2] == [30, 30]  # 10 tokens of each of /b/ /d/ /g/
    assert seen[2] == int(run.data.params["data.count.train"])  # then all of them


def test_a_sweep_with_a_bad_value_leaves_no_parent_behind(tmp_path):
    require_data("usps")
    result = train(tmp_path, "-m", "experiment=lecun1989", "seed=1,2", "optim.lr=-1")
    assert result.returncode == 2 and "optim.lr=-1 is not allowed" in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lecun1989")
    assert client.search_runs([exp.experiment_id]) == []  # the parent that began it was deleted


def test_a_sweep_whose_store_cannot_take_its_parent_stops_before_any_job(tmp_path):
    import sqlite3

    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as db:  # what an interrupted first use leaves
        db.execute("create table runs (id text)")
        db.execute("create table _alembic_tmp_runs (id text)")
    result = train(tmp_path, "-m", "experiment=lecun1989", "seed=1,2", f"hydra.sweep.dir={tmp_path}/multirun")
    assert result.returncode == 2
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: tracking store") and "half-initialised" in err[0], err
    assert not list((tmp_path / "multirun").glob("*/.hydra")) and "Launching" not in result.stdout


def test_an_interrupted_sweep_ends_killed_and_resume_auto_finishes_it_under_the_same_parent(tmp_path):
    import signal
    import time

    require_data("usps")
    store = tmp_path / "mlflow.db"
    sweep = ["-m", "experiment=lecun1989", "seed=1,2", "trainer.max_epochs=6", "data.train_subset=300",
             "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path}/multirun"]
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    client = client_before_training(store)
    proc = subprocess.Popen([sys.executable, "-m", "convrepro.train", *sweep], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # until the second job has a checkpoint
        time.sleep(0.5)
        exp = client.get_experiment_by_name("lecun1989")
        jobs = client.search_runs([exp.experiment_id], "tags.seed = '2'") if exp else []
        # Its pass-end checkpoint, not its first metrics: those are logged before it is saved,
        # and a job stopped in between has nothing to resume from (it would begin again).
        if jobs and (tmp_path / "checkpoints" / jobs[0].info.run_id / "last.ckpt").is_file():
            break
    assert proc.poll() is None, "the sweep ended before its second job began"
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    parents = client.search_runs([exp.experiment_id], "tags.sweep = 'parent'")
    assert len(parents) == 1, stderr[-3000:]
    (parent,) = parents
    assert parent.info.status == "KILLED" and parent.data.metrics["sweep/finished"] == 1
    assert "resume=auto continues it" in parent.data.tags["error"]

    result = subprocess.run([sys.executable, "-m", "convrepro.train", *sweep, "resume=auto"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed1: finished in run" in result.stdout and "skipped (the sweep continues)" in result.stdout
    (again,) = client.search_runs([exp.experiment_id], "tags.sweep = 'parent'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["seed"] for c in children) == ["1", "2"]  # job 1 not run again, job 2 resumed
    assert {c.info.status for c in children} == {"FINISHED"} and again.data.metrics["test/error_n"] == 2
    assert "resumed" in next(c for c in children if c.data.tags["seed"] == "2").data.tags


@pytest.mark.parametrize("step", ["pairs", "autograd"])
@pytest.mark.parametrize("paper", ["lecun1989", "waibel1989"])
def test_the_faithful_runs_train_through_the_layers_backward_functions(tmp_path, paper, step):
    """Every pattern of a faithful pass goes back through each convolution layer's own backward
    (conv2d_backward for LeCun's H1 and H2, conv1d_backward for the TDNN's two time-delay
    layers), on the default chained pairs and on the autograd loop alike."""
    require_data("usps" if paper == "lecun1989" else "speech")
    counts = tmp_path / "counts.json"
    subset = ["data.train_subset=60"] if paper == "lecun1989" else []
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "COUNTS": str(counts),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "scripts" / "count_backward.py"),
                             f"experiment={paper}", "trainer.max_epochs=1", f"training.online_step={step}",
                             "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/out", *subset],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = json.loads(counts.read_text())
    patterns = 60 if paper == "lecun1989" else 647  # one pass over the training tokens
    layer = "conv2d_backward" if paper == "lecun1989" else "conv1d_backward"
    assert calls.get(layer, 0) >= 2 * patterns, calls  # two convolution layers, every pattern
    activation = "scaled_tanh_backward" if paper == "lecun1989" else "logistic_backward"
    assert (calls.get(activation, 0) >= 3 * patterns) == (step == "pairs"), calls  # the pairs chain them too

