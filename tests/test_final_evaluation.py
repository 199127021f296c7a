"""The end-of-run evaluation stage: the same numbers on one process and sharded over two."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from convrepro.data.datamodules import USPSDataModule
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.final_evaluation import evaluate

from .conftest import REPO, require_data

pytestmark = pytest.mark.slow  # trains networks in real processes: `make test-all`


def test_two_ddp_processes_find_what_one_finds(tmp_path):
    require_data("usps")
    torch.manual_seed(3)
    model = ZipCodeNet()  # untrained but fixed weights: every pattern's outputs are definite
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    datamodule = USPSDataModule()
    datamodule.setup()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    single = evaluate(trainer, model, datamodule, 10)
    assert int(single.confusion.sum()) == 2007  # every test digit once
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-port", "29517", str(REPO / "tests/scripts/evaluate_ddp.py"),
                             str(tmp_path / "weights.pt"), str(tmp_path / "ddp.json")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = json.loads((tmp_path / "ddp.json").read_text())
    # 2007 patterns over 2 processes (1004 + 1003): none repeated, none lost.
    assert sharded["confusion"] == single.confusion.tolist()
    assert sharded["metrics"].keys() == single.metrics.keys() and len(single.metrics) == 2
    for key, value in single.metrics.items():
        assert sharded["metrics"][key] == value, key
