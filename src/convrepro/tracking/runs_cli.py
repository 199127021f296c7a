"""``convrepro-runs clean``: end the runs a ``kill -9`` (or a lost machine) left RUNNING;
``convrepro-runs links``: each experiment's runs table in the dashboard, its measures shown;
``convrepro-runs list``: the runs of the store (or of one experiment), newest first, with the
ids that ``resume=``, ``convrepro-rerun`` and ``convrepro-compare`` take.

Every run records the host and process id that run it (tags ``process.host`` and
``process.pid``).  A RUNNING run whose process is gone from this host is marked KILLED;
a RUNNING run of another host is marked KILLED only when it started more than
``--older-than-hours`` ago.

    convrepro-runs clean [--experiment lecun1989] [--older-than-hours 24] [--dry-run]
    convrepro-runs links [--base http://127.0.0.1:5000]
    convrepro-runs list [EXPERIMENT] [--limit 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from mlflow.tracking import MlflowClient

from convrepro.errors import TrackingError
from convrepro.tracking.runs import SHARED_VIEW_KEY, SHARED_VIEW_TAG, dashboard_url
from convrepro.tracking.store import add_uri_argument, check


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_runs(client: MlflowClient, experiments: list[str] | None, older_than_hours: float):
    exps = [client.get_experiment_by_name(n) for n in experiments] if experiments else client.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    if not ids:
        return []
    host = socket.gethostname()
    now_ms = time.time() * 1000
    stale = []
    for run in client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=10000):
        tags = run.data.tags  # sweep parents carry the sweep process's host and pid too
        pid = int(tags.get("process.pid", "0") or 0)
        if tags.get("process.host") == host and pid:
            if not _alive(pid):
                stale.append((run, f"process {pid} on {host} is gone"))
        elif now_ms - run.info.start_time > older_than_hours * 3600 * 1000:
            # Another machine's process cannot be checked from here: go by age.
            hours = (now_ms - run.info.start_time) / 3.6e6
            stale.append((run, f"started {hours:.1f} h ago on {tags.get('process.host', 'an unknown host')}"))
    return stale


HEADLINES = ("test/error", "val_10crop/error", "val/error")  # the first a run has is shown


def list_runs(client: MlflowClient, experiment: str | None, limit: int) -> int:
    exps = client.search_experiments() if experiment is None else [client.get_experiment_by_name(experiment)]
    if exps == [None]:
        names = ", ".join(sorted(e.name for e in client.search_experiments()))
        print(f"error: no experiment {experiment!r} in the store (it has: {names or 'none'})", file=sys.stderr)
        return 2
    names = {e.experiment_id: e.name for e in exps}
    runs = client.search_runs(list(names), order_by=["attributes.start_time DESC"], max_results=max(limit, 1)) \
        if names else []
    print(f"{'id':8s}  {'experiment':15s} {'name':42s} {'status':8s} {'started':16s} headline")
    for run in runs:
        metrics = run.data.metrics
        key = next((k for k in HEADLINES if k in metrics), None)
        sweep = f" (mean of {metrics.get(f'{key}_n', 0):.0f})" if run.data.tags.get("sweep") == "parent" else ""
        headline = f"{key} {metrics[key]:.2f} %{sweep}" if key else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        print(f"{run.info.run_id[:8]}  {names[run.info.experiment_id]:15.15s} {run.info.run_name[:42]:42s} "
              f"{run.info.status:8s} {started:16s} {headline}")
    if not runs:
        print("no runs yet: `make reproduce-lecun1989` makes the first")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convrepro-runs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("clean", help="mark stale RUNNING runs as KILLED")
    clean.add_argument("--experiment", action="append", help="only this experiment (repeatable)")
    clean.add_argument("--older-than-hours", type=float, default=24.0)
    clean.add_argument("--dry-run", action="store_true")
    add_uri_argument(clean)
    links = sub.add_parser("links", help="print each experiment's dashboard link (runs table with its measures)")
    links.add_argument("--base", default="http://127.0.0.1:5000", help="where the MLflow UI is served")
    add_uri_argument(links)
    listing = sub.add_parser("list", help="the runs, newest first: id, name, status, start, headline error")
    listing.add_argument("experiment", nargs="?", help="only this experiment (lecun1989, waibel1989, krizhevsky2012)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    add_uri_argument(listing)
    args = parser.parse_args(argv)
    try:
        check(args.uri, must_exist=True)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    client = MlflowClient(args.uri)
    if args.command == "list":
        return list_runs(client, args.experiment, args.limit)
    if args.command == "links":
        for experiment in sorted(client.search_experiments(), key=lambda e: e.name):
            if SHARED_VIEW_TAG + SHARED_VIEW_KEY in experiment.tags:
                print(f"{experiment.name:28s} {dashboard_url(args.base, experiment.experiment_id)}")
        return 0
    stale = stale_runs(client, args.experiment, args.older_than_hours)
    for run, why in stale:
        print(f"{'would mark' if args.dry_run else 'marked'} {run.info.run_id} ({run.info.run_name}) KILLED: {why}")
        if not args.dry_run:
            client.set_tag(run.info.run_id, "error", f"stale RUNNING run cleaned: {why}")
            client.set_terminated(run.info.run_id, "KILLED")
    print(f"{len(stale)} stale run(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
