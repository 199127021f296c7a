"""A run's life in MLflow: opened (new, or the run ``resume=`` names), locked, ended.

Inside ``tracked_run`` the caller trains; whatever happens the run ends FINISHED, FAILED
(the error as its ``error`` tag) or KILLED (Ctrl-C, SIGTERM), never RUNNING -- unless the
tracking server itself stopped answering (then ``resume=auto`` continues it there) -- and its
checkpoint folder is locked against a second process continuing it at the same time.
A stop by signal is one line on stderr and the shell's exit status (130 for SIGINT, 143
for SIGTERM), whatever the signal broke on its way (a DataLoader worker, a collective).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from convrepro.data.workers import end_workers
from convrepro.errors import ConfigError, StorageFull, StoreUnreachable, causes, storage_full
from convrepro.signals import StopSignals
from convrepro.tracking import recorder
from convrepro.tracking.logger import StoreLogger, bound_retries, unreachable
from convrepro.tracking.provenance import device_description
from convrepro.tracking.runs import checkpoint_dir, config_hash, ensure_experiment, find_resumable
from convrepro.tracking.store import check_writable, resolve_uri
from convrepro.tracking.sweep import PARENT_ENV, finished_job
from convrepro.training.callbacks import lock_directory

RUN_ID_ENV = "CONVREPRO_RUN_ID"  # DDP processes Lightning starts inherit the run's id


@dataclass
class TrackedRun:
    name: str
    client: MlflowClient
    run_id: str
    logger: StoreLogger
    resume_checkpoint: Path | None

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.run_id)


def run_name(cfg: DictConfig, hydra_cfg) -> str:
    """``faithful-sgd-seed3``: what tells runs of one experiment apart, first (the dashboard cuts
    names at ~20 characters; the paper is the experiment they are filed under)."""
    return f"{cfg.variant}-{hydra_cfg.runtime.choices.get('optim', 'optim')}-seed{cfg.seed}"


def resume_checkpoint(cfg: DictConfig) -> Path | None:
    """For a DDP process other than rank 0: the checkpoint ``resume=`` points at (rank 0 owns the run)."""
    if not cfg.resume:
        return None
    client = MlflowClient(resolve_uri(cfg.logger.tracking_uri))
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    return find_resumable(client, experiment.experiment_id, cfg)[1]


def _stopped_by(err: BaseException, stop: StopSignals) -> int | None:
    if stop.received is not None:
        return stop.received
    if isinstance(err, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(err, SystemExit) and not err.code:  # Lightning's SIGTERMException
        return signal.SIGTERM
    return None


def _quietly(action) -> bool:
    """Record something about a run that is already failing; False if the store refused."""
    try:
        action()
        return True
    except Exception:  # noqa: BLE001 (the store may be the failing part; the first error is the one to report)
        return False


def _first_line(err: BaseException) -> str:
    *_, root = causes(err)
    return (str(root).strip().splitlines() or [type(root).__name__])[0][:200]


def finished_sweep_job(cfg: DictConfig):
    """In a sweep continued with ``resume=auto``: this job's FINISHED run, if it has one."""
    parent = os.environ.get(PARENT_ENV)
    if cfg.resume != "auto" or not parent:
        return None
    client = MlflowClient(resolve_uri(cfg.logger.tracking_uri))
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    return finished_job(client, experiment.experiment_id, parent, config_hash(cfg)) if experiment else None


@contextmanager
def tracked_run(cfg: DictConfig, datamodule, hydra_cfg, output_dir: Path,
                experiment_note: str | None = None, columns: list[str] | None = None) -> Iterator[TrackedRun]:
    bound_retries(cfg.logger.patience_s)
    uri = resolve_uri(cfg.logger.tracking_uri)
    check_writable(output_dir)
    name = run_name(cfg, hydra_cfg)
    experiment_id = ensure_experiment(uri, cfg.logger.experiment_name, cfg.logger.artifact_root, experiment_note,
                                      columns)
    resume_id, resume_ckpt = None, None
    if cfg.resume:
        try:
            resume_id, resume_ckpt = find_resumable(MlflowClient(uri), experiment_id, cfg)
        except ConfigError:
            if not (cfg.resume == "auto" and os.environ.get(PARENT_ENV)):
                raise
            # A continued sweep: this job had not begun (or died before its first checkpoint).
    tags = None if resume_id else recorder.run_tags(cfg, datamodule, hydra_cfg, MlflowClient(uri), experiment_id)
    logger = StoreLogger(experiment_name=cfg.logger.experiment_name, run_name=name, tracking_uri=uri,
                          tags=tags, log_model=False, run_id=resume_id)
    logger._experiment_id = experiment_id
    client, run_id = logger.experiment, logger.run_id
    # Before the run is touched: another process may be continuing it right now.
    lock = lock_directory(checkpoint_dir(run_id))
    status = "FAILED"
    stop = StopSignals().__enter__()
    try:
        if resume_id:  # the same run continues: params and counts are already there
            print(f"resuming run {run_id} ({client.get_run(run_id).info.run_name}) from {resume_ckpt}")
            client.update_run(run_id, "RUNNING")
            client.set_tag(run_id, "resumed", f"from {resume_ckpt}")
        else:
            print(f"run {run_id} ({name}) in {uri}, experiment {cfg.logger.experiment_name}; "
                  f"{_device(cfg)}, precision {cfg.trainer.precision}; Ctrl-C stops it after the current step, "
                  "and the same command with resume=auto continues it", flush=True)
            recorder.log_config(client, run_id, cfg, output_dir)
            recorder.log_counts(client, run_id, datamodule)
            client.set_tag(run_id, "checkpoint.dir", str(checkpoint_dir(run_id)))
        os.environ[RUN_ID_ENV] = run_id
        yield TrackedRun(name, client, run_id, logger, resume_ckpt)
        status = "FINISHED"
        if resume_id:  # what stopped it before is history now, not the state of a finished run
            _quietly(lambda: _keep_error_as_history(client, run_id))
    except BaseException as err:
        signum = _stopped_by(err, stop)
        if signum is None and unreachable(err):  # nothing more is sent to it: it would wait as long again
            status = "RUNNING"
            ckpt = checkpoint_dir(run_id) / "last.ckpt"
            kept = f"its checkpoint {ckpt} is kept" if ckpt.is_file() else "it had no checkpoint yet"
            raise StoreUnreachable(f"the tracking server {uri} stopped answering ({_first_line(err)}); run {run_id} "
                                   f"stays RUNNING there and {kept}: once the server answers, the same command "
                                   "with resume=auto continues it") from None
        if signum is None:
            full = storage_full(err) and not isinstance(err, StorageFull)
            message = f"{type(err).__name__}: {err}"[:5000]
            _quietly(lambda: client.set_tag(run_id, "error", message))
            if full:  # the store's or the artifacts' disk: one line, not a library's traceback
                raise StorageFull(f"a disk filled while run {run_id} was being recorded ({_first_line(err)}); "
                                  "free space, then the same command with resume=auto continues from "
                                  f"{checkpoint_dir(run_id) / 'last.ckpt'}") from None
            raise
        # Ctrl-C or SIGTERM: the run was killed, not failed, and the process must not report
        # success (Lightning ends a Ctrl-C with exit 1 and a SIGTERM with exit 0).
        status = "KILLED"
        name = signal.Signals(signum).name
        client.set_tag(run_id, "error", f"interrupted ({name})")
        ckpt = checkpoint_dir(run_id) / "last.ckpt"
        how = (f"the same command with resume=auto continues it from {ckpt}" if ckpt.is_file()
               else "it had no checkpoint yet; start it again")
        print(f"stopped by {name}: run {run_id} is KILLED; {how}", file=sys.stderr)
        raise SystemExit(128 + signum) from None
    finally:
        stop.__exit__()
        if status != "FINISHED":  # before Python's exit handler waits for them (they ignore SIGTERM)
            end_workers()
        if status != "RUNNING" and not _quietly(lambda: client.set_terminated(run_id, status)):
            print(f"warning: run {run_id} could not be marked {status} in the tracking store (is its disk full?); "
                  "`convrepro-runs clean` ends it later", file=sys.stderr)
        lock.close()


def _device(cfg: DictConfig) -> str:
    device = device_description(str(cfg.trainer.accelerator))  # what the run's tags record
    if "device.gpu" in device:
        return f"on {device['device.gpu']}"
    return f"on the CPU ({device['device.threads']} threads)"


def _keep_error_as_history(client: MlflowClient, run_id: str) -> None:
    tags = client.get_run(run_id).data.tags
    if "error" in tags:
        history = [h for h in (tags.get("error.history", ""), tags["error"]) if h]
        client.set_tag(run_id, "error.history", " | ".join(history)[:5000])
        client.delete_tag(run_id, "error")
