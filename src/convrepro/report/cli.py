"""``convrepro-summary EXPERIMENT``: mean, sd and n of the final metrics of finished runs.

    convrepro-summary lecun1989 [--uri sqlite:///.../mlflow.db] [--filter "tags.variant = 'faithful'"]
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from convrepro.report.paper import paper_metrics
from convrepro.report.summary import aggregate, finished_runs
from convrepro.tracking.store import add_uri_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-summary", description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    add_uri_argument(parser)
    parser.add_argument("--filter", default="", help="an MLflow search filter, e.g. \"tags.variant = 'faithful'\"")
    args = parser.parse_args(argv)
    citation, metrics = paper_metrics(args.experiment)
    runs = finished_runs(MlflowClient(args.uri), args.experiment, args.filter)
    table = aggregate(runs, [m.key for m in metrics])
    out = Table(title=f"{citation}: finished runs in {args.uri}")
    out.add_column("measure")
    out.add_column("paper", justify="right")
    for group in table:
        out.add_column(group, justify="right")
    for m in metrics:
        row = [m.label, "-" if m.paper is None else f"{m.paper:g}"]
        for group in table:
            agg = table[group].get(m.key)
            row.append("-" if agg is None else str(agg))
        out.add_row(*row)
    Console().print(out)
    for group, per_metric in table.items():
        first = next(iter(per_metric.values()), None)
        if first:
            print(f"{group}: runs {', '.join(first.run_ids)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
