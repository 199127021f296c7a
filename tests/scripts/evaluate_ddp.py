"""Run by test_final_evaluation.py under torchrun: the end-of-run evaluation of given weights,
sharded over the processes (gloo, CPU); rank 0 writes what it found as JSON."""

import json
import sys

import pytorch_lightning as pl
import torch

from convrepro.data.datamodules import USPSDataModule
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.final_evaluation import evaluate
from convrepro.training.processes import leave_process_group

weights, out = sys.argv[1], sys.argv[2]
model = ZipCodeNet()
model.load_state_dict(torch.load(weights))
datamodule = USPSDataModule()
datamodule.setup()
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                     enable_model_summary=False)
results = evaluate(trainer, model, datamodule, 10)
if trainer.is_global_zero:
    json.dump({"metrics": results.metrics, "confusion": results.confusion.tolist()}, open(out, "w"))
leave_process_group()  # a gloo group left to the interpreter's exit aborts it now and then
