"""Faults beyond the pass-end kill: a diverging run, mid-pass checkpoints, two processes on one run."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

from .conftest import REPO, require_data
from .test_pipeline import train

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`


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


def _interrupted_run(tmp_path):
    """A finished one-pass LeCun run marked KILLED, as if it had been interrupted: it has a checkpoint."""
    require_data("usps")
    args = ("experiment=lecun1989", "trainer.max_epochs=1", "data.train_subset=300",
            "trainer.enable_progress_bar=false")
    assert train(tmp_path, *args).returncode == 0
    client, (run,) = _runs(tmp_path)
    client.set_terminated(run.info.run_id, "KILLED")
    return args, client, run


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    args, client, run = _interrupted_run(tmp_path)
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


def test_resume_by_id_refuses_another_configuration(tmp_path):
    """resume=<id> is held to resume=auto's rule: the run continues with the config it began with."""
    args, client, run = _interrupted_run(tmp_path)
    changed = ("experiment=lecun1989", "trainer.max_epochs=1", "data.train_subset=500", "model.nonlinearity=tanh",
               "trainer.enable_progress_bar=false")
    result = train(tmp_path, *changed, f"resume={run.info.run_id}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"resume={run.info.run_id}: that run was started with another configuration" in result.stderr
    assert "data.train_subset: 300 -> 500" in result.stderr and "model.nonlinearity: scaled_tanh -> tanh" in result.stderr
    assert "Traceback" not in result.stderr and client.get_run(run.info.run_id).info.status == "KILLED"
    # A key that does not change what the run computes (the progress bar) may differ.
    same = train(tmp_path, *args[:-1], "trainer.enable_progress_bar=true", f"resume={run.info.run_id}")
    assert same.returncode == 0, same.stderr[-2000:]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


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


def _stderr_at_exit(proc: subprocess.Popen, timeout: float, after: str) -> str:
    """The process's stderr once it has exited; killed (its group) and failed if it does not."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the process did not exit after {after}")


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


GROUP_SIGNAL_AT_SIXTH_STEP = """
import os, signal, sys
from convrepro.train import main
from convrepro.training.task import ClassifierTask
signum, pids_file = int(sys.argv.pop(1)), sys.argv.pop(1)
real_step = ClassifierTask.training_step
def parent(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None
def step(self, batch, batch_idx):
    if self.current_epoch == 0 and batch_idx == 5:  # the whole process group, as from outside
        me = os.getpid()
        open(pids_file, "w").write(" ".join(p for p in os.listdir("/proc") if p.isdigit() and parent(p) == me))
        os.killpg(os.getpgid(0), signum)
    return real_step(self, batch, batch_idx)
ClassifierTask.training_step = step
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_group_signal_mid_pass_with_workers_ends_killed_and_resumes(tmp_path, signum, status, imagenette_store):
    """What `timeout`, SLURM and Kubernetes do (the whole process group, workers included).

    The run signals its own group at its sixth step, so that the signal always lands inside
    the first pass: from outside, after a fixed wait, it landed after the pass on a fast
    machine (Lightning stops a pass at a step boundary and the callback keeps that state,
    while a stop in validation keeps only the last pass-end checkpoint, here none yet)."""
    from .test_pipeline_krizhevsky2012 import TINY

    require_data("imagenette2-224")
    args = (*[a for a in TINY if not a.startswith("data.num_workers")], "data.num_workers=2",
            "data.train_subset=320", "data.ten_crop=false", "trainer.max_epochs=2", "seed=4")
    store, pids = tmp_path / "mlflow.db", tmp_path / "workers.txt"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    command = [sys.executable, "-c", GROUP_SIGNAL_AT_SIXTH_STEP, str(int(signum)), str(pids), *args,
               f"hydra.run.dir={tmp_path}/o"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    stderr = _stderr_at_exit(proc, 240, "the signal")
    assert proc.returncode == status, stderr[-3000:]
    workers = {int(p) for p in pids.read_text().split()}
    assert len(workers) >= 2, f"the run had not started its DataLoader workers: {workers}"
    lines = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1 and signal.Signals(signum).name in lines[0] and "KILLED" in lines[0]
    assert "Traceback" not in stderr and "killed by signal" not in stderr
    time.sleep(1)
    assert not [w for w in workers if _alive(w)], "DataLoader workers were left behind"
    client, (run,) = _runs(tmp_path, "krizhevsky2012")
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == f"interrupted ({signal.Signals(signum).name})"
    # Either signal: stopped at a step boundary, and that step's state was kept
    kept = torch.load(tmp_path / "checkpoints" / run.info.run_id / "last.ckpt", weights_only=False)
    assert 0 < kept["global_step"] < 20, kept["global_step"]  # inside the first pass (20 steps)
    resumed = train(tmp_path, *args, f"resume={run.info.run_id[:8]}")  # a run id's beginning, as tables show it
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run.info.run_id} ({run.info.run_name})" in resumed.stdout
    final = client.get_run(run.info.run_id)
    assert final.info.status == "FINISHED" and "val/error" in final.data.metrics
    # a finished run carries no error; what stopped it on the way is kept as history
    assert "error" not in final.data.tags
    assert final.data.tags["error.history"] == f"interrupted ({signal.Signals(signum).name})"


CTRL_C_AT_THIRD_STEP = """
import os, signal, sys
import torch
from convrepro.data.workers import worker_init
from convrepro.train import main
from convrepro.training.task import ClassifierTask
mode, leaked, real_step = sys.argv.pop(1), [], ClassifierTask.training_step
def step(self, batch, batch_idx):
    if self.current_epoch == 0 and batch_idx == 2:
        if mode == "leak":  # workers whose DataLoader was lost half-way (as an interrupt while starting them)
            loader = torch.utils.data.DataLoader(range(10**6), num_workers=1, worker_init_fn=worker_init)
            leaked.append(iter(loader))
            os.kill(os.getpid(), signal.SIGINT)
        else:  # a library's clean-up hook that swallows the KeyboardInterrupt (logging's at-fork hook does)
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass
    return real_step(self, batch, batch_idx)
ClassifierTask.training_step = step
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("mode", ["swallowed", "leak"])
def test_ctrl_c_that_lands_in_a_bad_place_still_stops_the_run_and_the_process(tmp_path, mode):
    """A Ctrl-C swallowed by a library is raised again at the next batch; DataLoader workers a
    stopped run leaves behind (they ignore SIGTERM) are killed, so the process exits."""
    require_data("usps")
    args = ["experiment=lecun1989", "trainer.max_epochs=2", "data.train_subset=1000", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_AT_THIRD_STEP, mode, *args, f"hydra.run.dir={tmp_path}/o"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    stderr = _stderr_at_exit(proc, 240, "the interrupt")
    assert proc.returncode == 130, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("stopped by SIGINT: run")], stderr[-3000:]
    _, (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and "test/error" not in run.data.metrics


FULL_AT_SECOND_CHECKPOINT = """
import errno, sys
from pytorch_lightning import Trainer
from convrepro.train import main
saves, real_save = [], Trainer.save_checkpoint
def save(self, filepath, *args, **kwargs):  # the disk fills while the second checkpoint is written
    saves.append(filepath)
    if len(saves) == 2:
        open(filepath, "wb").write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
    return real_save(self, filepath, *args, **kwargs)
Trainer.save_checkpoint = save
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


def test_a_disk_that_fills_during_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path):
    require_data("usps")
    args = ["experiment=lecun1989", "trainer.max_epochs=2", "data.train_subset=200", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-c", FULL_AT_SECOND_CHECKPOINT, *args, f"hydra.run.dir={tmp_path}/o"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is full: the checkpoint did not fit" in errors[0]
    assert "last.ckpt (the last complete one) is kept" in errors[0] and "resume=auto continues" in errors[0]
    client, (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("StorageFull: the disk of")
    folder = tmp_path / "checkpoints" / run.info.run_id
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "last.ckpt"]  # no half-written file
    again = train(tmp_path, *args, "resume=auto")  # space freed: the same command continues
    assert again.returncode == 0, again.stderr[-3000:]
    _, (resumed,) = _runs(tmp_path)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"


def test_full_disks_are_recognised_however_a_library_reports_them():
    import errno
    import sqlite3

    from convrepro.errors import storage_full

    assert storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_full(RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                                     "writing file data/3: file write failed"))
    try:  # how SQLAlchemy (under MLflow) reports SQLite's full disk: wrapped, the cause chained
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) [SQL: INSERT INTO metrics ...]") from inner
    except RuntimeError as wrapped:
        assert storage_full(wrapped)
    assert not storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not storage_full(ValueError("bad value"))


STORE_FULL_IN_PASS_2 = """
import sqlite3, sys
import sqlalchemy.exc
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from convrepro.train import main
calls, real = [], SqlAlchemyStore.log_batch
def log_batch(self, run_id, metrics, params, tags):  # the store's disk fills once pass 2 is logged
    if any(m.key == "test/error" and m.step == 2 for m in metrics):
        raise sqlalchemy.exc.OperationalError("INSERT INTO metrics", {}, sqlite3.OperationalError(
            "database or disk is full"))
    return real(self, run_id, metrics, params, tags)
SqlAlchemyStore.log_batch = log_batch
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


def test_a_store_whose_disk_fills_during_training_is_one_line_and_no_run_is_left_running(tmp_path):
    require_data("usps")
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-c", STORE_FULL_IN_PASS_2, "experiment=lecun1989", "trainer.max_epochs=3",
                             "data.train_subset=200", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/o"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: a disk filled while run ") and "database or disk is full" \
        in lines[0] and "resume=auto continues from" in lines[0], lines
    _, (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"


MARK_FIRST_STEP = """
import sys
from pathlib import Path
from convrepro.train import main
from convrepro.training.task import ClassifierTask
marker, real_step = Path(sys.argv.pop(1)), ClassifierTask.training_step
def step(self, batch, batch_idx):
    marker.touch()  # training has begun: the test presses Ctrl-C at a random moment from here
    return real_step(self, batch, batch_idx)
ClassifierTask.training_step = step
sys.argv = ["convrepro-train", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("trial", range(20))
def test_ctrl_c_at_a_random_moment_of_an_alexnet_cpu_pass_stops_like_sigterm(tmp_path, trial, imagenette_store):
    """Ctrl-C as a terminal sends it (SIGINT to the whole group, DataLoader workers included), at a
    moment drawn per trial from the first 3 s of training (steps, validation, checkpoints): the
    step ends, one line, exit 130, the run KILLED with a checkpoint to resume -- never a native
    crash (once: heap corruption, exit 134) or a RUNNING run."""
    from .test_pipeline_krizhevsky2012 import TINY

    require_data("imagenette2-224")
    args = (*[a for a in TINY if not a.startswith("data.num_workers")], "data.num_workers=2",
            "data.train_subset=320", "data.ten_crop=false", "trainer.max_epochs=20", f"seed={trial}",
            "training.checkpoint_min_interval_s=0")
    marker = tmp_path / "training"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.Popen([sys.executable, "-c", MARK_FIRST_STEP, str(marker), *args, f"hydra.run.dir={tmp_path}/o"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(trial).uniform(0.0, 3.0))
    os.killpg(proc.pid, signal.SIGINT)
    stderr = _stderr_at_exit(proc, 180, "Ctrl-C")
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT: run") and "KILLED" in lines[0], lines
    _, (run,) = _runs(tmp_path, "krizhevsky2012")
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted (SIGINT)"
    kept = (tmp_path / "checkpoints" / run.info.run_id / "last.ckpt").is_file()
    assert kept == ("resume=auto continues it from" in lines[0]), lines  # the line tells what was kept
