"""The papers' reported numbers (``experiments/<paper>/paper.yaml``) beside a run's."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from rich.console import Console
from rich.table import Table

from convrepro.paths import EXPERIMENTS_DIR


@dataclass
class PaperMetric:
    key: str          # the MLflow metric key
    label: str
    paper: float | None
    tolerance: float | None  # |reproduction - paper| within this counts as reproduced
    goal_max: float | None = None  # or: a reproduction at or below this meets the goal


@dataclass
class Paper:
    """``experiments/<paper>/paper.yaml``: the paper's reported numbers and how to show them."""

    citation: str
    metrics: list[PaperMetric]
    primary: str        # the metric that picks a group's best run
    curves: list[str]   # metrics drawn per pass for every seed


def load_paper(experiment: str) -> Paper:
    data = yaml.safe_load((EXPERIMENTS_DIR / experiment / "paper.yaml").read_text())
    metrics = [PaperMetric(m["key"], m["label"], m.get("paper"), m.get("tolerance"), m.get("goal_max"))
               for m in data["metrics"]]
    return Paper(data["citation"], metrics, data.get("primary", metrics[0].key), data.get("curves", []))


def paper_metrics(experiment: str) -> tuple[str, list[PaperMetric]]:
    paper = load_paper(experiment)
    return paper.citation, paper.metrics


def verdict(metric: PaperMetric, value: float | None) -> str:
    if value is None:
        return "not measured"
    if metric.goal_max is not None:
        return "goal met" if value <= metric.goal_max else "goal missed"
    if metric.paper is None or metric.tolerance is None:
        return "-"
    return "reproduced" if abs(value - metric.paper) <= metric.tolerance else "missed"


def print_run_table(experiment: str, metrics: dict[str, float], run_name: str, console: Console | None = None,
                    deviations: list[str] | tuple = ()):
    """The paper beside one run; a run with extra overrides is not the recipe and gets no verdict."""
    citation, rows = paper_metrics(experiment)
    table = Table(title=f"{citation} — paper versus this run ({run_name})",
                  caption=f"not the paper's recipe ({' '.join(deviations)}): no verdict" if deviations else None)
    for col in ("measure", "paper", "reproduction", "verdict"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for m in rows:
        value = metrics.get(m.key)
        table.add_row(m.label, _cell(m.paper, m.key), _cell(value, m.key), "-" if deviations else verdict(m, value))
    (console or Console()).print(table)


def duration(seconds: float) -> str:
    """2.592e+05 s reads as 3 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _cell(value, key: str = "") -> str:
    if value is None:
        return "-"
    return duration(value) if key.endswith("seconds") else f"{value:.4g}"


def experiment_note(experiment: str) -> str:
    """The MLflow experiment's description (markdown): the paper and the numbers it reports."""
    citation, rows = paper_metrics(experiment)
    lines = [f"**{citation}**, re-run by convrepro with hand-written convolution and pooling layers.", "",
             "| measure | paper |", "|---|---|"]
    lines += [f"| {m.label} | {_cell(m.paper, m.key)} |" for m in rows]
    lines += ["", "One run per seed; a sweep is a parent run holding mean, sd and n over its seeds. "
              "`make report` sets every group beside these numbers."]
    return "\n".join(lines)


def run_note(experiment: str, metrics: dict[str, float], run_name: str, deviations: list[str] | tuple = ()) -> str:
    """A run's description (markdown): the paper-versus-this-run table the console printed."""
    citation, rows = paper_metrics(experiment)
    lines = [f"**{citation}** — paper versus this run ({run_name})", "",
             "| measure | paper | reproduction | verdict |", "|---|---|---|---|"]
    lines += [f"| {m.label} | {_cell(m.paper, m.key)} | {_cell(metrics.get(m.key), m.key)} | "
              f"{'-' if deviations else verdict(m, metrics.get(m.key))} |" for m in rows]
    if deviations:
        lines += ["", f"Not the paper's recipe ({' '.join(deviations)}): no verdict."]
    return "\n".join(lines)
