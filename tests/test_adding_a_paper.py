"""docs/adding-a-paper.md, walked through: its experiment config and paper.yaml (taken from the
guide itself) make a new paper that trains, prints its table and shows up in the report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, require_data

pytestmark = pytest.mark.slow  # trains a network in a real process


def _yaml_blocks() -> list[str]:
    guide = (REPO / "docs" / "adding-a-paper.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)


def test_a_toy_paper_added_as_the_guide_says_trains_and_shows_up_in_the_report(tmp_path):
    require_data("usps")
    experiment_yaml, paper_yaml = _yaml_blocks()
    config, notes = REPO / "conf" / "experiment" / "toy1990.yaml", REPO / "experiments" / "toy1990"
    assert not config.exists() and not notes.exists(), "a toy paper is left over from an earlier run"
    env = {**os.environ, "CONVREPRO_PROJECT_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    try:
        config.write_text(experiment_yaml)
        notes.mkdir()
        (notes / "paper.yaml").write_text(paper_yaml)
        run = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=toy1990",
                              "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}/o"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Toy et al. 1990 (a walk-through) — paper versus this run (faithful-sgd-seed0" in \
            " ".join(run.stdout.split())
        assert re.search(r"test error after 2 passes \(%\)\s*│\s*5\s*│\s*[\d.]+\s*│", run.stdout), run.stdout[-2000:]
        report = subprocess.run([sys.executable, "-m", "convrepro.report.build", "--paper", "toy1990", "--out",
                                 str(tmp_path / "rep")], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        assert report.returncode == 0, report.stderr[-3000:]
        md = (tmp_path / "rep" / "results.md").read_text()
        assert "| Toy et al. 1990 | test error after 2 passes (%) | 5 |" in md  # the papers' table
        assert "## Toy et al. 1990 (a walk-through)" in md and "### faithful-sgd — its one finished run" in md
    finally:
        config.unlink(missing_ok=True)
        shutil.rmtree(notes, ignore_errors=True)
