"""A run's life in MLflow: opened (new, or the run ``resume=`` names), locked, ended.

Inside ``tracked_run`` the caller trains; whatever happens the run ends FINISHED, FAILED
(the error as its ``error`` tag) or KILLED (Ctrl-C, SIGTERM), never RUNNING, and its
checkpoint folder is locked against a second process continuing it at the same time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from pytorch_lightning.loggers import MLFlowLogger

from convrepro.tracking import recorder
from convrepro.tracking.runs import check_writable, checkpoint_dir, ensure_experiment, find_resumable
from convrepro.tracking.store import resolve_uri
from convrepro.training.callbacks import lock_directory

RUN_ID_ENV = "CONVREPRO_RUN_ID"  # DDP processes Lightning starts inherit the run's id


@dataclass
class TrackedRun:
    name: str
    client: MlflowClient
    run_id: str
    logger: MLFlowLogger
    resume_checkpoint: Path | None

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.run_id)


def run_name(cfg: DictConfig, hydra_cfg) -> str:
    return f"{cfg.name}-{cfg.variant}-{hydra_cfg.runtime.choices.get('optim', 'optim')}-seed{cfg.seed}"


def resume_checkpoint(cfg: DictConfig) -> Path | None:
    """For a DDP process other than rank 0: the checkpoint ``resume=`` points at (rank 0 owns the run)."""
    if not cfg.resume:
        return None
    client = MlflowClient(resolve_uri(cfg.logger.tracking_uri))
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    return find_resumable(client, experiment.experiment_id, cfg)[1]


@contextmanager
def tracked_run(cfg: DictConfig, datamodule, hydra_cfg, output_dir: Path) -> Iterator[TrackedRun]:
    uri = resolve_uri(cfg.logger.tracking_uri)
    check_writable(output_dir)
    name = run_name(cfg, hydra_cfg)
    experiment_id = ensure_experiment(uri, cfg.logger.experiment_name, cfg.logger.artifact_root)
    resume_id, resume_ckpt = None, None
    if cfg.resume:
        resume_id, resume_ckpt = find_resumable(MlflowClient(uri), experiment_id, cfg)
    tags = None if resume_id else recorder.run_tags(cfg, datamodule, hydra_cfg, MlflowClient(uri), experiment_id)
    logger = MLFlowLogger(experiment_name=cfg.logger.experiment_name, run_name=name, tracking_uri=uri,
                          tags=tags, log_model=False, run_id=resume_id)
    logger._experiment_id = experiment_id
    client, run_id = logger.experiment, logger.run_id
    # Before the run is touched: another process may be continuing it right now.
    lock = lock_directory(checkpoint_dir(run_id))
    status = "FAILED"
    try:
        if resume_id:  # the same run continues: params and counts are already there
            client.update_run(run_id, "RUNNING")
            client.set_tag(run_id, "resumed", f"from {resume_ckpt}")
        else:
            recorder.log_config(client, run_id, cfg, output_dir)
            recorder.log_counts(client, run_id, datamodule)
            client.set_tag(run_id, "checkpoint.dir", str(checkpoint_dir(run_id)))
        os.environ[RUN_ID_ENV] = run_id
        yield TrackedRun(name, client, run_id, logger, resume_ckpt)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit) as err:
        # Ctrl-C: Lightning shuts down gracefully, then exits; SIGTERM: Lightning raises
        # SIGTERMException, an exit with status 0.  Either way the run was killed, not failed,
        # and the process must not report success.
        status = "KILLED"
        client.set_tag(run_id, "error", f"interrupted ({type(err).__name__})")
        if isinstance(err, SystemExit) and not err.code:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        client.set_terminated(run_id, status)
        lock.close()
