"""Where the project's own folders are (configs, the embedded store, experiment notes)."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout (src/convrepro/paths.py -> ../..); CONVREPRO_PROJECT_DIR moves the store,
# outputs and reports elsewhere (e.g. when the package is installed non-editable).
PROJECT_ROOT = Path(os.environ.get("CONVREPRO_PROJECT_DIR", Path(__file__).resolve().parents[2]))
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
