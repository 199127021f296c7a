"""Aggregate finished runs from any tracking URI: mean, sd, n, min, max per group and metric."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from convrepro.tracking.statistics import Summary, summarise


@dataclass
class Aggregate(Summary):
    run_ids: list[str]

    def __str__(self) -> str:
        return f"{self.mean:.3g} ± {self.sd:.2g} (n={self.n})"


def finished_runs(client: MlflowClient, experiment: str, filter_string: str = ""):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = "attributes.status = 'FINISHED'" + (f" and {filter_string}" if filter_string else "")
    runs = client.search_runs([exp.experiment_id], query, max_results=5000)
    return [r for r in runs if r.data.tags.get("sweep") != "parent"]  # parents hold aggregates


def group_key(run) -> str:
    """variant-optimizer, e.g. faithful-sgd: the part of the run name before the seed."""
    t = run.data.tags
    return f"{t.get('variant', '?')}-{t.get('hydra.choice.optim', '?')}"


def aggregate(runs, metrics: list[str]) -> dict[str, dict[str, Aggregate]]:
    groups: dict[str, list] = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(run)
    table: dict[str, dict[str, Aggregate]] = {}
    for key, members in sorted(groups.items()):
        table[key] = {}
        for metric in metrics:
            scored = [r for r in members if metric in r.data.metrics]
            summary = summarise(r.data.metrics[metric] for r in scored)
            if summary is not None:
                table[key][metric] = Aggregate(**vars(summary), run_ids=[r.info.run_id for r in scored])
    return table
