"""`convrepro-train --help`: how to choose an experiment, quickly (no Lightning import)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO

HELP = """
import atexit, sys
atexit.register(lambda: print("LIGHTNING IMPORTED" if "pytorch_lightning" in sys.modules else "no lightning"))
sys.argv = ["convrepro-train", "--help"]
from convrepro.train import main
main()
"""


def test_help_lists_the_experiments_without_importing_lightning():
    result = subprocess.run([sys.executable, "-c", HELP], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "Pick a paper's recipe with experiment=" in out
    assert "experiment: krizhevsky2012, krizhevsky2012_claims, krizhevsky2012_cpu" in out and "lecun1989_modern" in out
    assert "h2_table" not in out  # not the whole composed config
    assert out.strip().endswith("no lightning")
