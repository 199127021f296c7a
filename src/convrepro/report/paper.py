"""The papers' reported numbers (``experiments/<paper>/paper.yaml``) beside a run's."""

from __future__ import annotations

import math
import re
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
    tolerance: float | None  # a stated |reproduction - paper| that counts as reproduced (with ``why``)
    goal_max: float | None = None  # or: a reproduction at or below this meets the goal
    measured_on: int | None = None  # or: the paper's rate (%) was counted on this many patterns
    why: str | None = None  # the reason for a stated tolerance or goal, shown beside the verdict


@dataclass
class Paper:
    """``experiments/<paper>/paper.yaml``: the paper's reported numbers and how to show them."""

    citation: str
    metrics: list[PaperMetric]
    primary: str        # the metric that picks a group's best run
    curves: list[str]   # metrics drawn per pass for every seed


def load_paper(experiment: str) -> Paper:
    data = yaml.safe_load((EXPERIMENTS_DIR / experiment / "paper.yaml").read_text())
    metrics = [PaperMetric(m["key"], m["label"], m.get("paper"), m.get("tolerance"), m.get("goal_max"),
                           m.get("measured_on"), m.get("why")) for m in data["metrics"]]
    return Paper(data["citation"], metrics, data.get("primary", metrics[0].key), data.get("curves", []))


def paper_metrics(experiment: str) -> tuple[str, list[PaperMetric]]:
    paper = load_paper(experiment)
    return paper.citation, paper.metrics


def dashboard_columns(experiment: str) -> list[str]:
    """The runs table's metric columns: the headline measure, the curves' measures, the wall
    time -- few enough that MLflow (metrics before params, each in name order) still shows the
    seed within 1,400 px, and the headline is not pushed right by measures sorted before it."""
    paper = load_paper(experiment)
    keys = [paper.primary, *paper.curves, "time/total_seconds"]
    return list(dict.fromkeys(keys))


@dataclass
class Judgement:
    verdict: str  # reproduced, missed, goal met, goal missed, "-" (nothing to judge), not measured
    rule: str     # the tolerance or goal the verdict used, in words ("" when there is none)


MIN_SEEDS_FOR_SPREAD = 3  # a standard deviation of two runs says too little to judge by


def judge(metric: PaperMetric, mean: float | None, sd: float | None = None, n: int = 1) -> Judgement:
    """The paper's number against a reproduction (one run, or the mean of ``n`` seeds).

    A rate the paper counted on ``measured_on`` patterns is one draw of its training run; so is
    each of ours.  The difference between the paper's single run and our mean of ``n`` has the
    spread sigma * sqrt(1 + 1/n), and the verdict allows twice that.  Sigma is the seeds' own
    standard deviation when there are at least three seeds; with fewer it is the binomial
    standard deviation of the paper's rate on its patterns (the least two runs can differ by
    chance, counting errors on that many patterns).  Other rows use a tolerance or a goal that
    paper.yaml states with its reason."""
    if mean is None:
        return Judgement("not measured", "")
    why = f" ({metric.why})" if metric.why else ""
    if metric.goal_max is not None:
        return Judgement("goal met" if mean <= metric.goal_max else "goal missed", f"goal ≤ {metric.goal_max:g}{why}")
    if metric.paper is None:
        return Judgement("-", "")
    if metric.measured_on:
        if n >= MIN_SEEDS_FOR_SPREAD and sd is not None:
            sigma, source = sd, f"sd of the {n} seeds"
        else:
            p = metric.paper / 100
            sigma, source = 100 * math.sqrt(p * (1 - p) / metric.measured_on), \
                f"binomial sd on {metric.measured_on:,} patterns"
        tolerance = 2 * sigma * math.sqrt(1 + 1 / n)
        rule = f"±{tolerance:.2g} (2σ√(1+1/n), σ = {source})"
    elif metric.tolerance is not None:
        tolerance, rule = metric.tolerance, f"±{metric.tolerance:g}{why}"
    else:
        return Judgement("-", "")
    return Judgement("reproduced" if abs(mean - metric.paper) <= tolerance else "missed", rule)


def print_run_table(experiment: str, metrics: dict[str, float], run_name: str, console: Console | None = None,
                    deviations: list[str] | tuple = (), passes: int | None = None):
    """The paper beside one run; a run with extra overrides is not the recipe and gets no verdict.
    ``passes``: how many the run made, where the labels name the paper's count."""
    citation, rows = paper_metrics(experiment)
    caption = (f"not the paper's recipe ({' '.join(deviations)}): no verdict" if deviations else
               "tolerance ±2σ√2: σ = the binomial sd of the paper's rate on the patterns it counted "
               "(the spread two runs show); goals as the experiment states them")
    table = Table(title=f"{citation} — paper versus this run ({run_name})", caption=caption)
    for col in ("measure", "paper", "reproduction", "tolerance", "verdict"):
        table.add_column(col, justify="right" if col in ("paper", "reproduction") else "left")
    for m in rows:
        value = metrics.get(m.key)
        judged = Judgement("-", "") if deviations else judge(m, value)
        # the rule's reason is in the caption; a goal keeps its own
        short = judged.rule if judged.rule.startswith("goal") else judged.rule.split(" (")[0]
        table.add_row(_label(m.label, passes), cell(m.paper, m.key), cell(value, m.key), short, judged.verdict)
    (console or Console()).print(table)


def _label(label: str, passes: int | None) -> str:
    """'test error after 23 passes' reads 'after 2 passes (paper: 23)' for a 2-pass run."""
    return re.sub(r"after (\d+) passes", lambda m: m.group(0) if passes in (None, int(m.group(1)))
                  else f"after {passes} passes (paper: {m.group(1)})", label)


def duration(seconds: float) -> str:
    """2.592e+05 s reads as 3 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def cell(value, key: str = "") -> str:
    """A value as the tables write it: durations in their units, other numbers to 4 digits."""
    if value is None:
        return "-"
    return duration(value) if key.endswith("seconds") else f"{value:.4g}"


def experiment_note(experiment: str) -> str:
    """The MLflow experiment's description (markdown): the paper and the numbers it reports.  Its
    first line is plain text: the experiments list shows it raw, the experiment page renders it."""
    citation, rows = paper_metrics(experiment)
    lines = [f"{citation}, re-run by convrepro with hand-written convolution and pooling layers.", "",
             "| measure | paper |", "|---|---|"]
    lines += [f"| {m.label} | {cell(m.paper, m.key)} |" for m in rows]
    lines += ["", "One run per seed; a sweep is a parent run holding mean, sd and n over its seeds. "
              "`make report` sets every group beside these numbers."]
    return "\n".join(lines)


def run_note(experiment: str, metrics: dict[str, float], run_name: str, deviations: list[str] | tuple = ()) -> str:
    """A run's description (markdown): the paper-versus-this-run table the console printed."""
    citation, rows = paper_metrics(experiment)
    lines = [f"**{citation}** — paper versus this run ({run_name})", "",
             "| measure | paper | reproduction | tolerance | verdict |", "|---|---|---|---|---|"]
    for m in rows:
        judged = Judgement("-", "") if deviations else judge(m, metrics.get(m.key))
        lines.append(f"| {m.label} | {cell(m.paper, m.key)} | {cell(metrics.get(m.key), m.key)} | "
                     f"{judged.rule} | {judged.verdict} |")
    if deviations:
        lines += ["", f"Not the paper's recipe ({' '.join(deviations)}): no verdict."]
    return "\n".join(lines)
