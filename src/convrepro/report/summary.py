"""Aggregate finished runs from any tracking URI: mean, sd, n, min, max per group and metric.

Runs are pooled only when they computed the same thing except for the seed: the same
variant and optimizer, the same extra overrides, and the same recorded configuration
(every param but the seed and the keys that differ between machines or invocations).
A group with extra overrides (``trainer.max_epochs=1``) is labelled by them and is not the
paper's recipe: it gets no verdict beside the paper.  A rerun counts once (it is left out
when the run it repeats is in the same group).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from convrepro.tracking.statistics import Summary, summarise


@dataclass
class Aggregate(Summary):
    run_ids: list[str]

    def __str__(self) -> str:
        return self.text()

    def text(self, unit=None) -> str:
        """``mean ± sd (n=N)``; ``unit`` writes a value in its own unit (``duration``)."""
        mean, sd = (unit(self.mean), unit(self.sd)) if unit else (f"{self.mean:.3g}", f"{self.sd:.2g}")
        return f"{mean} (1 run)" if self.n == 1 else f"{mean} ± {sd} (n={self.n})"


# Params that do not change what a run computes, or that differ between machines and
# invocations (`make` passes data.root; a direct run does not): exact keys, then prefixes.
_NOT_RECIPE = {"seed", "resume", "rehash_data", "data.root", "trainer.enable_progress_bar", "data.progress"}
_NOT_RECIPE_PREFIXES = ("paths.", "logger.", "data.count.")
# Overrides already in a group's name (the experiment, the optimizer group, the seed), or that
# change nothing computed.
_NAMED = {"seed", "experiment", "optim", "resume", "rehash_data", "data.root", "trainer.enable_progress_bar",
          "data.progress"}
_NAMED_PREFIXES = ("logger.", "hydra")
# The machine a run was placed on, not its recipe: `make reproduce-krizhevsky2012` passes
# trainer=gpu, and the GPU run is the experiment as configured (its recorded accelerator
# still keeps it apart from CPU runs in recipe_hash).  trainer=ddp is not here: its batch
# is per process, so more processes train with a larger batch.
_PLACES = {"trainer=cpu", "trainer=gpu"}


def _ignored(key: str, exact: set[str], prefixes: tuple[str, ...]) -> bool:
    return key in exact or key.startswith(prefixes)


def recipe_hash(run) -> str:
    """What the run computed, seed aside: its recorded params without the keys above."""
    params = sorted((k, v) for k, v in run.data.params.items()
                    if not _ignored(k, _NOT_RECIPE, _NOT_RECIPE_PREFIXES))
    return hashlib.sha256(json.dumps(params).encode()).hexdigest()[:8]


def extra_overrides(overrides: list[str]) -> list[str]:
    """Overrides beyond the experiment, optimizer and seed (``trainer.max_epochs=1``)."""
    return sorted(o for o in overrides
                  if o not in _PLACES and not _ignored(o.split("=", 1)[0].lstrip("+~"), _NAMED, _NAMED_PREFIXES))


def deviations(run) -> list[str]:
    """The run's extra overrides, from its ``hydra.overrides`` tag."""
    text = run.data.tags.get("hydra.overrides", "(none)")
    return extra_overrides([] if text == "(none)" else text.split(" "))


def finished_runs(client: MlflowClient, experiment: str, filter_string: str = ""):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = "attributes.status = 'FINISHED'" + (f" and {filter_string}" if filter_string else "")
    runs = client.search_runs([exp.experiment_id], query, max_results=5000)
    return [r for r in runs if r.data.tags.get("sweep") != "parent"]  # parents hold aggregates


def group_key(run) -> str:
    """variant-optimizer, e.g. faithful-sgd (the part of the run name before the seed), then any
    extra overrides in brackets: ``faithful-sgd [trainer.max_epochs=1]``."""
    t = run.data.tags
    name = f"{t.get('variant', '?')}-{t.get('hydra.choice.optim', '?')}"
    extra = deviations(run)
    return f"{name} [{' '.join(extra)}]" if extra else name


def is_recipe(key: str) -> bool:
    """Whether a group ran its experiment as configured (only the seed varied)."""
    return "[" not in key


def groups_of(runs) -> dict[str, list]:
    """Runs pooled by group_key and recipe_hash (a key with several recorded configurations, from
    config files that changed between runs, is split and each part named by its hash)."""
    by_key: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_key[group_key(run)][recipe_hash(run)].append(run)
    out: dict[str, list] = {}
    for key, recipes in sorted(by_key.items()):
        for digest, members in recipes.items():
            ids = {r.info.run_id for r in members}
            members = [r for r in members if r.data.tags.get("rerun.of") not in ids]  # a rerun counts once
            out[key if len(recipes) == 1 else f"{key} (config {digest})"] = members
    return out


def aggregate(runs, metrics: list[str], grouped: bool = False) -> dict[str, dict[str, Aggregate]]:
    """Per group (``groups_of``; ``grouped``: the runs are one group already) and metric."""
    groups = {"": list(runs)} if grouped else groups_of(runs)
    table: dict[str, dict[str, Aggregate]] = {}
    for key, members in groups.items():
        table[key] = {}
        for metric in metrics:
            scored = [r for r in members if metric in r.data.metrics]
            summary = summarise(r.data.metrics[metric] for r in scored)
            if summary is not None:
                table[key][metric] = Aggregate(**vars(summary), run_ids=[r.info.run_id for r in scored])
    return table
