"""``convrepro-compare RUN_A RUN_B``: what differs between two runs' configs and final metrics."""

from __future__ import annotations

import argparse
import math
import sys

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from convrepro.errors import TrackingError
from convrepro.tracking.runs import find_run
from convrepro.tracking.store import add_uri_argument, check

# Params that differ between any two runs without changing what they compute (the data
# root: `make` passes it, a direct run leaves it null; the dataset fingerprint says whether
# the data were the same).
_INCIDENTAL = ("paths.output_dir", "paths.root", "resume", "data.root", "rehash_data", "trainer.enable_progress_bar")


def config_differences(a, b) -> list[tuple[str, str | None, str | None]]:
    keys = sorted(set(a.data.params) | set(b.data.params))
    return [(k, a.data.params.get(k), b.data.params.get(k)) for k in keys
            if k not in _INCIDENTAL and a.data.params.get(k) != b.data.params.get(k)]


def metric_differences(a, b) -> list[tuple[str, float | None, float | None, float | None]]:
    keys = sorted(set(a.data.metrics) | set(b.data.metrics))
    rows = []
    for k in keys:
        va, vb = a.data.metrics.get(k), b.data.metrics.get(k)
        delta = vb - va if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb) else None
        rows.append((k, va, vb, delta))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    add_uri_argument(parser)
    parser.add_argument("--all-metrics", action="store_true", help="also list metrics that are equal")
    args = parser.parse_args(argv)
    try:
        check(args.uri, must_exist=True)  # before a client: MLflow's creates a missing SQLite store
        client = MlflowClient(args.uri)
        a, b = find_run(client, args.run_a), find_run(client, args.run_b)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MlflowException as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    console = Console(width=160)
    name_a, name_b = f"A {a.info.run_name}", f"B {b.info.run_name}"
    configs = Table(title=f"config differences: A={a.info.run_id} B={b.info.run_id}")
    for col in ("key", name_a, name_b):
        configs.add_column(col)
    diffs = config_differences(a, b)
    for key, va, vb in diffs:
        configs.add_row(key, "-" if va is None else va, "-" if vb is None else vb)
    if diffs:
        console.print(configs)
    else:
        console.print("config: identical")
    for tag in ("git.commit", "dataset.fingerprint"):
        ta, tb = a.data.tags.get(tag), b.data.tags.get(tag)
        console.print(f"{tag}: {'same' if ta == tb else 'DIFFERENT'} ({ta} / {tb})")
    metrics = Table(title="final metrics")
    for col in ("metric", name_a, name_b, "B - A"):
        metrics.add_column(col, justify="left" if col == "metric" else "right")
    shown = 0
    for key, va, vb, delta in metric_differences(a, b):
        if delta == 0 and not args.all_metrics:
            continue
        shown += 1
        metrics.add_row(key, "-" if va is None else f"{va:.6g}", "-" if vb is None else f"{vb:.6g}",
                        "-" if delta is None else f"{delta:+.6g}")
    if shown:
        console.print(metrics)
    else:
        console.print("final metrics: identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
