"""Sweeps (``-m seed=1,2,3``) as one MLflow parent run with the jobs nested under it.

A Hydra callback: before the first job it creates the parent run (which also initialises
the store, so parallel jobs never race to create its tables) and exports its id in
``CONVREPRO_PARENT_RUN_ID`` (each job's run then carries ``mlflow.parentRunId``).  Jobs that
do not inherit the environment (Hydra's submitit launcher on SLURM nodes) find the parent
by the sweep folder it is tagged with, which every job of the sweep knows; after
the last job it logs, on the parent, the mean (under the children's metric names), sd and n of every final metric
of its finished children, and the sweep's overrides.

A sweep that stops early (Ctrl-C, a job's error) still ends its parent -- KILLED or FAILED,
with the summary of the jobs finished so far -- or deletes it when no job began (a bad
value refused before any run).  ``resume=auto`` on a sweep continues the latest unfinished
parent of the same overrides: finished jobs are skipped, an interrupted one resumes from
its checkpoint, the rest run (see ``finished_job``).
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from convrepro.errors import USER_ERRORS
from convrepro.tracking.statistics import summarise
from convrepro.tracking.store import resolve_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
# MLflow is imported when a sweep starts: Hydra makes this callback for every command,
# and a single run's config error should not wait for MLflow's ~2 s import.

PARENT_ENV = "CONVREPRO_PARENT_RUN_ID"


def _sweep_key(overrides: list[str]) -> str:
    """The sweep's overrides without ``resume=``: what identifies a sweep to continue."""
    return " ".join(o for o in overrides if not o.startswith("resume=")) or "(none)"


class SweepParentRun(Callback):
    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and runs the sweep anyway, its jobs
        # then without a parent: a store that cannot take the parent stops the sweep instead.
        try:
            self._open_parent(config)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None

    def _open_parent(self, config: DictConfig) -> None:
        from mlflow.tracking import MlflowClient

        from convrepro.tracking.runs import ensure_experiment

        uri = resolve_uri(config.logger.tracking_uri)
        experiment_id = ensure_experiment(uri, config.logger.experiment_name, config.logger.artifact_root)
        self.client = MlflowClient(uri)
        key = _sweep_key(list(config.hydra.overrides.task)).replace("'", "")
        earlier = self.client.search_runs(
            [experiment_id], f"tags.sweep = 'parent' and tags.`sweep.key` = '{key}' and "
            "attributes.status != 'FINISHED'", order_by=["attributes.start_time DESC"], max_results=1,
        ) if config.get("resume") == "auto" else []
        if earlier:
            self.parent_id = earlier[0].info.run_id
            self.client.update_run(self.parent_id, "RUNNING")
            self.client.set_tag(self.parent_id, "sweep.resumed", time.strftime("%Y-%m-%d %H:%M:%S"))
        else:
            run = self.client.create_run(
                experiment_id, run_name=f"{config.variant}-sweep-{time.strftime('%m%d-%H%M%S')}",
                tags={"sweep": "parent", "sweep.overrides": " ".join(config.hydra.overrides.task) or "(none)",
                      "sweep.key": key, "paper": config.name, "sweep.dir": str(config.hydra.sweep.dir),
                      "variant": config.variant, "process.host": socket.gethostname(),
                      "process.pid": str(os.getpid())})
            self.parent_id = run.info.run_id
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._stopped_early)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.client is None or self.parent_id is None:
            return
        self._end(None, self._children(self.parent_id))

    def _children(self, parent_id: str):
        parent = self.client.get_run(parent_id)
        return self.client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000)

    def _end(self, early_status: str | None, children: list) -> None:
        """Summary of the finished children on the parent, then its status: FINISHED after the
        last job; KILLED or FAILED when the sweep stopped early (no job at all: deleted)."""
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        if early_status is not None and not children and "sweep.resumed" not in \
                self.client.get_run(parent_id).data.tags:
            self.client.delete_run(parent_id)  # nothing ran (a value refused before any run)
            return
        finished = [c for c in children if c.info.status == "FINISHED"]
        self.client.log_metric(parent_id, "sweep/jobs", len(children))
        self.client.log_metric(parent_id, "sweep/finished", len(finished))
        summary = aggregate(finished)
        for key, value in summary.items():
            self.client.log_metric(parent_id, key, value)
        if early_status is None:
            self.client.set_terminated(parent_id, "FINISHED" if finished else "FAILED")
            _print_summary(parent_id, len(finished), summary)
            return
        failed = next((c for c in children if c.info.status == "FAILED" and "error" in c.data.tags), None)
        why = f" (run {failed.info.run_id} failed: {failed.data.tags['error'][:300]})" if failed else ""
        self.client.set_tag(parent_id, "error", f"the sweep stopped after {len(finished)} finished job(s){why}; "
                                                "the same command with resume=auto continues it")
        self.client.set_terminated(parent_id, early_status)

    def _stopped_early(self) -> None:
        """At exit, if the last job never ended the sweep (Ctrl-C, SIGTERM, a job's error)."""
        if self.client is None or self.parent_id is None:
            return
        children = self._children(self.parent_id)
        status = "KILLED" if any(c.info.status == "KILLED" for c in children) else "FAILED"
        self._end(status, children)


def _print_summary(parent_id: str, finished: int, summary: dict[str, float]) -> None:
    """The sweep's result where it ends: mean ± sd (n) of the error measures over its runs."""
    keys = [k for k in summary if k.endswith("error") and not k.startswith(("train/running", "shift/"))]
    print(f"sweep {parent_id}: {finished} finished run(s)")
    for key in keys:
        print(f"  {key:28s} {summary[key]:8.3f} ± {summary[f'{key}_sd']:.3f} %  (n {summary[f'{key}_n']:.0f})")
    print("next: `make report` for the papers beside these runs, `make mlflow-ui` for the runs table")


def finished_job(client: MlflowClient, experiment_id: str, parent_id: str, config_hash: str):
    """The FINISHED run of this job's configuration under this sweep parent, if any (a
    continued sweep skips it)."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and "
                              f"tags.`config.hash` = '{config_hash}' and attributes.status = 'FINISHED'",
                              max_results=1)
    return runs[0] if runs else None


def aggregate(runs) -> dict[str, float]:
    """Over the runs' final values of each metric: the mean under the metric's own name (so that
    the dashboard's columns show it on the parent's row), ``<metric>_sd`` and ``<metric>_n``."""
    keys = sorted({key for run in runs for key in run.data.metrics})
    out = {}
    for key in keys:
        summary = summarise(run.data.metrics[key] for run in runs if key in run.data.metrics)
        if summary is not None:
            out.update({key: summary.mean, f"{key}_sd": summary.sd, f"{key}_n": float(summary.n)})
    return out
