"""The run's MLflow logger, for a tracking server that may stop answering mid-run.

MLflow retries a failed request 7 times with a doubling wait (and 120 s for each answer): a
server that died mid-run held the run for ~14 minutes without a word.  ``bound_retries`` caps
that at ``logger.patience_s``; the first write that still fails ends the run (``StoreUnreachable``)
with nothing more sent to the dead server (Lightning's own ``finalize`` would wait as long
again).  Nothing the run measured is lost: a pass's metrics are written before the checkpoint
that ends it, so ``resume=auto`` (once the server answers) redoes exactly the passes the store
has not received.
"""

from __future__ import annotations

import os

from pytorch_lightning.loggers import MLFlowLogger

from convrepro.errors import StoreUnreachable, causes

# urllib3 waits 0, 2, 4 s before its 2nd, 3rd and 4th attempts (backoff factor 1)
_RETRIES, _WAITS = 3, 6
_GONE = ("Max retries exceeded", "Read timed out", "Connection refused")


def bound_retries(patience_s: float) -> None:
    """MLflow's own settings, unless the user set them: 4 attempts a request, each answer awaited
    (patience - waits) / 4 seconds, so a request gives up within ``patience_s``."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int((patience_s - _WAITS) / (_RETRIES + 1)))))


def unreachable(err: BaseException | None) -> bool:
    """Whether an exception, or one it came from, is a server that no longer answers (MLflow
    reports it as 'API request to … failed with exception … Max retries exceeded')."""
    return any(isinstance(e, StoreUnreachable) or any(text in str(e) for text in _GONE) for e in causes(err))


class StoreLogger(MLFlowLogger):
    """Lightning's MLflow logger that stops talking to a server once it has stopped answering."""

    dead = False

    def log_metrics(self, metrics, step=None) -> None:
        if self.dead:
            raise StoreUnreachable("the tracking server stopped answering")
        try:
            super().log_metrics(metrics, step)
        except Exception as err:
            if not unreachable(err):
                raise
            self.dead = True
            raise StoreUnreachable(str(err).splitlines()[0][:300]) from None

    def finalize(self, status: str = "success") -> None:
        if not self.dead:  # the run's end is recorded by tracked_run, or left for resume=auto
            super().finalize(status)
