"""``convrepro-summary EXPERIMENT``: mean, sd and n of the final metrics of finished runs.

    convrepro-summary lecun1989 [--uri sqlite:///.../mlflow.db] [--filter "tags.variant = 'faithful'"]
"""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from convrepro.errors import TrackingError
from convrepro.paths import CONF_DIR, EXPERIMENTS_DIR
from convrepro.report.paper import cell, duration, paper_metrics
from convrepro.report.summary import aggregate, finished_runs, is_recipe
from convrepro.tracking.store import add_uri_argument, check


def paper_of(name: str) -> str | None:
    """The paper an experiment name belongs to (``lecun1989_modern`` -> ``lecun1989``), or None."""
    papers = sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/paper.yaml"))
    known = name in papers or (CONF_DIR / "experiment" / f"{name}.yaml").is_file()
    return next((p for p in papers if name == p or name.startswith(p + "_")), None) if known else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-summary", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    add_uri_argument(parser)
    parser.add_argument("--filter", default="", help="an MLflow search filter, e.g. \"tags.variant = 'faithful'\"")
    args = parser.parse_args(argv)
    paper = paper_of(args.experiment)
    if paper is None:
        experiments = sorted(f.stem for f in (CONF_DIR / "experiment").glob("*.yaml"))
        print(f"error: no paper or experiment named {args.experiment!r}: choose one of {', '.join(experiments)}",
              file=sys.stderr)
        return 2
    if paper != args.experiment:
        print(f"({args.experiment} is an experiment of {paper}: its runs are grouped by variant below)")
    args.experiment = paper
    citation, metrics = paper_metrics(args.experiment)
    try:
        check(args.uri, must_exist=True)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runs = finished_runs(MlflowClient(args.uri), args.experiment, args.filter)
    table = aggregate(runs, [m.key for m in metrics])
    out = Table(title=f"{citation}: finished runs in {args.uri}")
    out.add_column("measure")
    out.add_column("paper", justify="right")
    # Headers stay short and tell groups apart at 80 columns: a number, the variant-optimizer,
    # and whether it is the paper's recipe; the overrides of each number follow the table.
    for i, group in enumerate(table, 1):
        recipe = "" if is_recipe(group) else " (overrides)"
        out.add_column(f"[{i}] {group.partition(' [')[0]}{recipe}", justify="right")
    for m in metrics:
        row = [m.label, cell(m.paper, m.key)]
        for group in table:
            agg = table[group].get(m.key)
            # durations in the run table's units, not seconds
            row.append("-" if agg is None else agg.text(duration if m.key.endswith("seconds") else None))
        out.add_row(*row)
    Console().print(out)
    for i, (group, per_metric) in enumerate(table.items(), 1):
        first = next(iter(per_metric.values()), None)
        if first:
            print(f"[{i}] {group}: runs {', '.join(first.run_ids)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
