"""A Hydra callback that checks the output folder before Hydra itself creates it.

Hydra makes ``hydra.run.dir`` (or the sweep folder) before the job starts; a folder that
cannot be created would otherwise end in a bare ``FileNotFoundError`` traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _check(folder: str, key: str) -> None:
    from convrepro.errors import TrackingError
    from convrepro.tracking.store import check_writable

    try:
        check_writable(Path(folder))
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


class OutputFolderCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config.hydra.sweep.dir, "hydra.sweep.dir")
