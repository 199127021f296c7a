"""What a run prints, and what it leaves out."""

from __future__ import annotations


def quiet_libraries() -> None:
    """What a run prints is the progress bar, the passes and the paper table; Lightning's
    start-up notes (accelerator lines, a logger advertisement) and two warnings that do not
    apply here (a pytree deprecation inside Lightning; the logging interval, which the task
    does not use: it logs per pass) are left out.  Anything else still shows."""
    import logging
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    # "Creating initial MLflow database tables...", and Lightning's "Received SIGTERM" (a stop
    # by signal is the run's own one line)
    for name in ("mlflow.store.db.utils", "alembic", "pytorch_lightning.trainer.connectors.signal_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
