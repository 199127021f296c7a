"""Which runs a report describes: per paper, per group (variant-optimizer), the latest sweep.

A group's runs are the finished children of its latest finished sweep parent when it has
one (``make sweep-<paper>``), otherwise all its finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from .summary import Aggregate, aggregate, finished_runs, groups_of


@dataclass
class Group:
    key: str                       # e.g. faithful-sgd
    runs: list                     # mlflow Run objects
    source: str                    # "sweep <name> (<id>)" or "all finished runs"
    aggregates: dict[str, Aggregate] = field(default_factory=dict)


def groups_for(client: MlflowClient, experiment: str, metrics: list[str]) -> list[Group]:
    out = []
    for key, members in groups_of(finished_runs(client, experiment)).items():
        parents = {r.data.tags["mlflow.parentRunId"] for r in members if "mlflow.parentRunId" in r.data.tags}
        source = "its one finished run" if len(members) == 1 else f"all {len(members)} finished runs"
        finished_parents = []
        for pid in parents:
            parent = client.get_run(pid)
            if parent.info.status == "FINISHED":
                finished_parents.append(parent)
        if finished_parents:
            latest = max(finished_parents, key=lambda r: r.info.start_time)
            members = [r for r in members if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id]
            source = f"sweep {latest.info.run_name} ({latest.info.run_id}), {len(members)} runs"
        group = Group(key, sorted(members, key=lambda r: r.info.start_time), source)
        group.aggregates = aggregate(members, metrics, grouped=True).get("", {})
        out.append(group)
    return out


def best_run(group: Group, metric: str, lower_is_better: bool = True):
    scored = [r for r in group.runs if metric in r.data.metrics]
    if not scored:
        return group.runs[-1] if group.runs else None
    pick = min if lower_is_better else max
    return pick(scored, key=lambda r: r.data.metrics[metric])
