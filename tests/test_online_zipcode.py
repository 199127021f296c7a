"""LeCun's on-line step written out (forward, backward, update unrolled on buffers) computes
what the generic autograd loop computes, pattern after pattern, and steps aside wherever it
does not apply."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.losses import ClassificationLoss
from convrepro.training.online_zipcode import ZipCodeOnlineStep, fast_path_refusal
from convrepro.training.task import ClassifierTask


def _digits(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 16, 16, generator=g, dtype=dtype) * 2 - 1)  # USPS pixels lie in [-1, 1]
    return x, torch.randint(0, 10, (n,), generator=g)


def _autograd_online(model, x, y, loss, lr):
    params, losses, outputs = list(model.parameters()), [], []
    targets = loss.prepare(y, x)
    for i in range(len(y)):
        out = model(x[i : i + 1])
        value = loss.against(out, targets[i : i + 1])
        grads = torch.autograd.grad(value, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)
        losses.append(value.detach())
        outputs.append(out.detach()[0])
    return torch.stack(losses), torch.stack(outputs)


def test_written_out_step_gives_the_autograd_weights_after_300_patterns_in_float64():
    torch.manual_seed(3)
    ours, reference = ZipCodeNet().double(), ZipCodeNet().double()
    reference.load_state_dict(ours.state_dict())
    with torch.no_grad():  # weights outside H2's table must be left alone by both paths
        ours.h2.conv.weight.add_(0.5 * (1 - ours.h2.conv.connection_mask))
        reference.h2.conv.weight.copy_(ours.h2.conv.weight)
    x, y = _digits(300)
    loss = ClassificationLoss()
    step = ZipCodeOnlineStep(ours)
    losses, outs = [], []
    for start in range(0, 300, 128):  # loader batches of 128, 128, 44
        l, o = step.run(x[start : start + 128], loss.prepare(y[start : start + 128], x), lr=0.03)
        losses.append(l)
        outs.append(o)
    expected, expected_outputs = _autograd_online(reference, x, y, loss, lr=0.03)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), name
        assert not torch.equal(p, ZipCodeNet().double().state_dict()[name])
    assert torch.allclose(torch.cat(losses), expected, rtol=0, atol=1e-13)
    # each pattern's outputs as the network gave them before that pattern's update
    assert torch.allclose(torch.cat(outs), expected_outputs, rtol=0, atol=1e-13)


@pytest.mark.parametrize("change,reason", [
    (dict(model=dict(nonlinearity="tanh")), "not the scaled tanh throughout"),
    (dict(model=dict(subsampling="decimation")), "dropout or decimation layers"),
    (dict(model=dict(dropout=0.25)), "dropout or decimation layers"),
    (dict(loss="cross_entropy"), "not the MSE loss"),
    (dict(k=2), "not one update per pattern"),
    (dict(momentum=0.9), "SGD with momentum or weight decay"),
    (dict(adam=True), "not plain SGD"),
])
def test_every_other_configuration_keeps_the_generic_path(change, reason):
    model = ZipCodeNet(**change.get("model", {}))
    loss = ClassificationLoss(change.get("loss", "mse"))
    opt = (torch.optim.Adam(model.parameters()) if change.get("adam") else
           torch.optim.SGD(model.parameters(), lr=0.03, momentum=change.get("momentum", 0.0)))
    assert fast_path_refusal(model, loss, opt, change.get("k", 1)) == reason
    assert fast_path_refusal(ZipCodeNet(), ClassificationLoss(), torch.optim.SGD(ZipCodeNet().parameters(), lr=0.1),
                             1) is None


def _trained_through_lightning(online_step: str, x, y) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    model = ZipCodeNet()
    task = ClassifierTask(model, ClassificationLoss(), lambda p: torch.optim.SGD(p, lr=0.03), ["test"],
                          scheduler={"factory": lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)},
                          patterns_per_update=1, online_step=online_step)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    trainer = pl.Trainer(max_epochs=2, precision="64-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(task, train_dataloaders=loader)
    assert task.history[0]["train/running_error"] >= 0  # the pass's running figures were recorded
    assert isinstance(task._written_out, ZipCodeOnlineStep) == (online_step == "written_out")  # the path taken
    return {k: v.clone() for k, v in model.state_dict().items()}, task.history


def test_the_task_trains_the_same_weights_on_either_step_with_a_schedule():
    x, y = _digits(150, torch.float32, seed=1)
    written, h1 = _trained_through_lightning("written_out", x, y)
    generic, h2 = _trained_through_lightning("autograd", x, y)
    for name in written:
        assert torch.allclose(written[name].double(), generic[name].double(), rtol=0, atol=1e-12), name
    for a, b in zip(h1, h2, strict=True):  # the running loss and error of each pass as well
        assert a["train/running_loss"] == pytest.approx(b["train/running_loss"], abs=1e-12)
        assert a["train/running_error"] == b["train/running_error"]
