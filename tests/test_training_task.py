"""The task's bookkeeping: per step nothing may wait for a GPU; per pass, training and its
evaluation are timed apart, and the pass-end checkpoint keeps its interval."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.losses import ClassificationLoss
from convrepro.training.task import ClassifierTask

# A tensor made from host data (torch.tensor(3.0, device=...)) is copied from the host, and
# on CUDA such a copy first waits for every queued kernel; a value read back (float(t),
# t.item()) waits likewise.  Both show as these operators, on any device.
HOST_ROUND_TRIPS = {"aten.lift_fresh.default", "aten._local_scalar_dense.default"}


class _Operators(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _task() -> ClassifierTask:
    torch.manual_seed(0)
    return ClassifierTask(ZipCodeNet(), ClassificationLoss(), lambda p: torch.optim.SGD(p, lr=0.1), ["val"],
                          top_k=(1, 5))


def test_a_training_step_and_a_validation_step_make_no_tensor_from_host_data_and_read_nothing_back(monkeypatch):
    task = _task()
    # On a CPU the finite check reads every loss back at once (no queue to stall); what it does
    # on a GPU -- wait for FINITE_CHECK_STEPS losses -- is what is checked here.
    monkeypatch.setattr(ClassifierTask, "_check_finite", lambda self, loss, i: self._unchecked.append((i, loss)))
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    task.training_step((x, y), 0)  # the first step moves the running sums to the device
    with _Operators() as ops:
        task.training_step((x, y), 1)
        with torch.no_grad():
            task.validation_step((x, y), 0)
            task.validation_step((x, y), 1)
    assert not HOST_ROUND_TRIPS & set(ops.names), sorted(HOST_ROUND_TRIPS & set(ops.names))
    # ... and the sums still count what they did
    assert task._train_sums[2].item() == 16 and task._eval_sums["val"][-1].item() == 16
    assert 0 <= task._eval_sums["val"][2].item() <= 16  # top-1 misses


class _SlowEvaluation(ClassifierTask):
    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        time.sleep(1.0)
        return super().validation_step(batch, batch_idx, dataloader_idx)


def test_a_pass_is_timed_without_its_evaluation_which_is_timed_apart():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    task = _SlowEvaluation(ZipCodeNet(), ClassificationLoss(), lambda p: torch.optim.SGD(p, lr=0.1), ["val"])
    data = TensorDataset(torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,)))
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(task, DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
    for row in task.history:  # one validation batch of 1 s after two training steps of a tiny net
        assert row["time/evaluation_seconds"] >= 1.0
        assert row["time/pass_seconds"] < 1.0
        assert row["throughput/train_patterns_per_second"] * row["time/pass_seconds"] == pytest.approx(16)


@pytest.mark.parametrize("interval,saved_after", [(0, [1, 2, 3]), (3600, [3])])
def test_pass_end_checkpoints_keep_their_minimum_interval_and_the_last_pass_always_saves(tmp_path, interval,
                                                                                        saved_after):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from convrepro.training.callbacks import PassCheckpoint

    torch.manual_seed(0)
    task = ClassifierTask(ZipCodeNet(), ClassificationLoss(), lambda p: torch.optim.SGD(p, lr=0.1), ["val"])
    checkpoint, saved = PassCheckpoint(tmp_path, min_interval_s=interval), []
    real_save = checkpoint.save
    checkpoint.save = lambda trainer: (saved.append(trainer.current_epoch + 1), real_save(trainer))
    data = TensorDataset(torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,)))
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1,
                         callbacks=[checkpoint])
    trainer.fit(task, DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
    assert saved == saved_after
    # The file holds the end of the run: a resume starts after the last pass.
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2
    for name, value in task.model.state_dict().items():
        assert torch.equal(state["state_dict"][f"model.{name}"], value), name
