"""DataLoader worker set-up shared by every data module.

``timeout``, SLURM and Kubernetes stop a job by signalling its whole process group, and
Ctrl-C does the same from a terminal: the decoding workers would die first and the main
process would fail on "DataLoader worker ... is killed by signal" instead of stopping at
the next step boundary with a checkpoint.  So workers ignore SIGINT and SIGTERM; the main
process ends them when it stops (and a worker whose parent is gone exits by itself).

Ignoring SIGTERM has one consequence: Python's exit handler for child processes sends each
daemonic child SIGTERM and then waits for it.  A DataLoader normally shuts its workers down
itself, but an interrupt that lands while it is starting them leaves workers it no longer
knows about, and the process then hung at exit after its last line (seen once in CI).
``end_workers`` kills such leftovers when a run stops or fails.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

from lightning_fabric.utilities.seed import pl_worker_init_function


def worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lightning seeds workers itself only when a loader has no worker_init_fn of its own.
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)


def end_workers() -> None:
    """Kill this process's daemonic children that are still alive: the DataLoader workers.
    Python's exit handler would end exactly these (SIGTERM, then wait); SIGKILL is the one
    they do not ignore.  They hold nothing to save: each only decodes batches."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)
