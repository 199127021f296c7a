"""Sweeps (``-m seed=1,2,3``) as one MLflow parent run with the jobs nested under it.

A Hydra callback: before the first job it creates the parent run (which also initialises
the store, so parallel jobs never race to create its tables) and exports its id in
``CONVREPRO_PARENT_RUN_ID`` (each job's run then carries ``mlflow.parentRunId``).  Jobs that
do not inherit the environment (Hydra's submitit launcher on SLURM nodes) find the parent
by the sweep folder it is tagged with, which every job of the sweep knows; after
the last job it logs, on the parent, the mean, sd and n of every final metric of its
finished children, and the sweep's overrides.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from convrepro.tracking.runs import ensure_experiment
from convrepro.tracking.statistics import summarise
from convrepro.tracking.store import resolve_uri

PARENT_ENV = "CONVREPRO_PARENT_RUN_ID"


class SweepParentRun(Callback):
    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = resolve_uri(config.logger.tracking_uri)
        experiment_id = ensure_experiment(uri, config.logger.experiment_name, config.logger.artifact_root)
        self.client = MlflowClient(uri)
        overrides = " ".join(config.hydra.overrides.task)
        run = self.client.create_run(
            experiment_id, run_name=f"{config.name}-{config.variant}-sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sweep": "parent", "sweep.overrides": overrides or "(none)", "paper": config.name,
                  "sweep.dir": str(config.hydra.sweep.dir),
                  "variant": config.variant, "process.host": socket.gethostname(), "process.pid": str(os.getpid())})
        self.parent_id = run.info.run_id
        os.environ[PARENT_ENV] = self.parent_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.client is None or self.parent_id is None:
            return
        os.environ.pop(PARENT_ENV, None)
        parent = self.client.get_run(self.parent_id)
        children = self.client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_id}'", max_results=10000)
        finished = [c for c in children if c.info.status == "FINISHED"]
        self.client.log_metric(self.parent_id, "sweep/jobs", len(children))
        self.client.log_metric(self.parent_id, "sweep/finished", len(finished))
        for key, value in aggregate(finished).items():
            self.client.log_metric(self.parent_id, key, value)
        self.client.set_terminated(self.parent_id, "FINISHED" if finished else "FAILED")


def aggregate(runs) -> dict[str, float]:
    """``<metric>/mean``, ``/sd`` and ``/n`` over the runs' final values of each metric."""
    keys = sorted({key for run in runs for key in run.data.metrics})
    out = {}
    for key in keys:
        summary = summarise(run.data.metrics[key] for run in runs if key in run.data.metrics)
        if summary is not None:
            out.update({f"{key}/mean": summary.mean, f"{key}/sd": summary.sd, f"{key}/n": float(summary.n)})
    return out
