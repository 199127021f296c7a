"""Faults beyond the pass-end kill: a diverging run, mid-pass checkpoints, two processes on one run."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import torch
from mlflow.tracking import MlflowClient

from .conftest import REPO, require_data
from .test_pipeline import train


def _runs(tmp_path, experiment="lecun1989"):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def test_nan_loss_stops_the_run_failed_with_a_clear_message(tmp_path):
    require_data("usps")
    result = train(tmp_path, "experiment=lecun1989_modern", "optim.lr=1e6", "data.train_subset=512",
                   "trainer.max_epochs=3", "trainer.enable_progress_bar=false")
    assert result.returncode == 1
    assert "error: the training loss became nan in pass 1, step 1: training diverged" in result.stderr
    assert "Traceback" not in result.stderr
    _, (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FloatingPointError: the training loss became nan")


def test_checkpoint_every_n_steps_then_kill_and_resume_mid_pass(tmp_path):
    require_data("usps")
    args = ("experiment=lecun1989", "trainer.max_epochs=2", "training.checkpoint_every_n_steps=2",
            "trainer.enable_progress_bar=false", "seed=2")
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = subprocess.Popen([sys.executable, "-m", "convrepro.train", *args, f"hydra.run.dir={tmp_path}/o1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ckpt = time.time() + 180, None
    while time.time() < deadline and ckpt is None:  # the first checkpoint: 2 of the 29 steps of pass 1
        found = list((tmp_path / "checkpoints").glob("*/last.ckpt")) if (tmp_path / "checkpoints").exists() else []
        ckpt = found[0] if found else None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert ckpt is not None, "no mid-pass checkpoint was written"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    done = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    # (Lightning counts the step being finished as completed only after this hook)
    assert state["epoch"] == 0 and 1 <= done < 28  # written in the middle of pass 1

    resumed = train(tmp_path, *args, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/error")]
    assert steps == [1, 2]  # each pass recorded once, at its own step
    assert 0 < run.data.metrics["test/error"] < 20


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    require_data("usps")
    args = ("experiment=lecun1989", "trainer.max_epochs=1", "data.train_subset=300",
            "trainer.enable_progress_bar=false")
    assert train(tmp_path, *args).returncode == 0
    client, (run,) = _runs(tmp_path)
    client.set_terminated(run.info.run_id, "KILLED")  # as if it had been interrupted
    lock_path = tmp_path / "checkpoints" / run.info.run_id / ".lock"
    with open(lock_path, "a+") as held:  # "another process" still training it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        result = train(tmp_path, *args, f"resume={run.info.run_id}")
    assert result.returncode == 2
    assert f"checkpoint directory {tmp_path}/checkpoints/{run.info.run_id} is in use by pid 4242" in result.stderr
    assert client.get_run(run.info.run_id).info.status == "KILLED"  # untouched
    assert "Traceback" not in result.stderr


def test_malformed_tracking_uri_and_unwritable_output_are_one_message_each(tmp_path):
    require_data("usps")
    cases = [({"MLFLOW_TRACKING_URI": "ftp://somewhere"}, (), "tracking URI 'ftp://somewhere' is malformed"),
             ({"MLFLOW_TRACKING_URI": "sqlite:///relative.db"}, (), "must name an absolute path"),
             ({}, ("hydra.run.dir=/proc/convrepro-out",),
              "output directory /proc/convrepro-out is not writable")]
    for extra_env, overrides, message in cases:
        env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path),
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", **extra_env}
        args = overrides or (f"hydra.run.dir={tmp_path}/o",)
        result = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=lecun1989", *args],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (message, result.stderr[-2000:])
        assert message in result.stderr and "Traceback" not in result.stderr
        if (tmp_path / "mlflow.db").exists():
            _, runs = _runs(tmp_path)
            assert runs == []
