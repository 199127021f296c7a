"""DataLoader worker set-up shared by every data module.

``timeout``, SLURM and Kubernetes stop a job by signalling its whole process group, and
Ctrl-C does the same from a terminal: the decoding workers would die first and the main
process would fail on "DataLoader worker ... is killed by signal" instead of stopping at
the next step boundary with a checkpoint.  So workers ignore SIGINT and SIGTERM; the main
process ends them when it stops (and a worker whose parent is gone exits by itself).
"""

from __future__ import annotations

import os
import signal

from lightning_fabric.utilities.seed import pl_worker_init_function


def worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lightning seeds workers itself only when a loader has no worker_init_fn of its own.
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)
