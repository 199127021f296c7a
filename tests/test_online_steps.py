"""The on-line steps written out (forward, backward, update unrolled on buffers) for LeCun's
zip-code network and Waibel's TDNN compute what the generic autograd loop computes, pattern
after pattern, and step aside wherever they do not apply."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.training.losses import ClassificationLoss
from convrepro.training.online_tdnn import TimeDelayOnlineStep, tdnn_refusal
from convrepro.training.online_zipcode import ZipCodeOnlineStep, zipcode_refusal
from convrepro.training.sdlm import SDLM, gauss_newton_diagonal
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
    step = ZipCodeOnlineStep(ours, torch.optim.SGD(ours.parameters(), lr=0.03))
    losses, outs = [], []
    for start in range(0, 300, 128):  # loader batches of 128, 128, 44
        l, o = step.run(x[start : start + 128], loss.prepare(y[start : start + 128], x))
        losses.append(l)
        outs.append(o)
    expected, expected_outputs = _autograd_online(reference, x, y, loss, lr=0.03)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), name
        assert not torch.equal(p, ZipCodeNet().double().state_dict()[name])
    assert torch.allclose(torch.cat(losses), expected, rtol=0, atol=1e-13)
    # each pattern's outputs as the network gave them before that pattern's update
    assert torch.allclose(torch.cat(outs), expected_outputs, rtol=0, atol=1e-13)


def test_written_out_sdlm_step_gives_the_generic_sdlm_weights_in_float64():
    """SDLM (the paper's own method): each weight's step size lr / (mu + h), h the Gauss-Newton
    diagonal estimated on 500 patterns as the task does (enough for the large convolution path,
    whose H2 curvature comes back channels-last), then 200 on-line updates both ways."""
    torch.manual_seed(6)
    ours, reference = ZipCodeNet().double(), ZipCodeNet().double()
    reference.load_state_dict(ours.state_dict())
    loss = ClassificationLoss()
    x, y = _digits(700, seed=2)
    optimizers = []
    for model in (ours, reference):
        opt = SDLM(model.parameters(), lr=0.0005, mu=0.02)
        h = gauss_newton_diagonal(model, x[:500], loss.output_curvature)
        opt.set_curvature({p: v / 500 for p, v in h.items()})
        optimizers.append(opt)
    assert zipcode_refusal(ours, loss, optimizers[0], 1) is None
    step = ZipCodeOnlineStep(ours, optimizers[0])
    losses = torch.cat([step.run(x[s : s + 128], loss.prepare(y[s : s + 128], x))[0] for s in range(500, 700, 128)])
    params, targets, expected = list(reference.parameters()), loss.prepare(y, x), []
    for i in range(500, 700):
        value = loss.against(reference(x[i : i + 1]), targets[i : i + 1])
        optimizers[1].apply(params, torch.autograd.grad(value, params))
        expected.append(value.detach())
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), name
    assert torch.allclose(losses, torch.stack(expected), rtol=0, atol=1e-13)


@pytest.mark.parametrize("change,reason", [
    (dict(model=dict(nonlinearity="tanh")), "not the scaled tanh throughout"),
    (dict(model=dict(subsampling="decimation")), "dropout or decimation layers"),
    (dict(model=dict(dropout=0.25)), "dropout or decimation layers"),
    (dict(loss="cross_entropy"), "not the MSE loss"),
    (dict(k=2), "not one update per pattern"),
    (dict(momentum=0.9), "SGD with momentum or weight decay"),
    (dict(adam=True), "not plain SGD or SDLM"),
])
def test_every_other_configuration_keeps_the_generic_path(change, reason):
    model = ZipCodeNet(**change.get("model", {}))
    loss = ClassificationLoss(change.get("loss", "mse"))
    opt = (torch.optim.Adam(model.parameters()) if change.get("adam") else
           torch.optim.SGD(model.parameters(), lr=0.03, momentum=change.get("momentum", 0.0)))
    assert zipcode_refusal(model, loss, opt, change.get("k", 1)) == reason
    assert zipcode_refusal(ZipCodeNet(), ClassificationLoss(), torch.optim.SGD(ZipCodeNet().parameters(), lr=0.1),
                             1) is None


TDNN_LOSS = dict(name="mse", target_low=0.0, target_high=1.0, num_classes=3)


def _tokens(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, 15, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _trained_through_lightning(online_step: str, network: str, x, y):
    torch.manual_seed(5)
    if network == "zipcode":
        model, loss, momentum, written = ZipCodeNet(), ClassificationLoss(), 0.0, ZipCodeOnlineStep
    else:
        model, loss, momentum, written = TimeDelayNet(), ClassificationLoss(**TDNN_LOSS), 0.9, TimeDelayOnlineStep
    task = ClassifierTask(model, loss, lambda p: torch.optim.SGD(p, lr=0.03, momentum=momentum), ["test"],
                          scheduler={"factory": lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)},
                          patterns_per_update=1, online_step=online_step)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    trainer = pl.Trainer(max_epochs=2, precision="64-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(task, train_dataloaders=loader)
    assert task.history[0]["train/running_error"] >= 0  # the pass's running figures were recorded
    assert isinstance(task._written_out, written) == (online_step == "written_out")  # the path taken
    return {k: v.clone() for k, v in model.state_dict().items()}, task.history


@pytest.mark.parametrize("network", ["zipcode", "tdnn"])
def test_the_task_trains_the_same_weights_on_either_step_with_a_schedule(network):
    x, y = _digits(150, torch.float32, seed=1) if network == "zipcode" else _tokens(150, torch.float32, seed=1)
    written, h1 = _trained_through_lightning("written_out", network, x, y)
    generic, h2 = _trained_through_lightning("autograd", network, x, y)
    for name in written:
        assert torch.allclose(written[name].double(), generic[name].double(), rtol=0, atol=1e-12), name
    for a, b in zip(h1, h2, strict=True):  # the running loss and error of each pass as well
        assert a["train/running_loss"] == pytest.approx(b["train/running_loss"], abs=1e-12)
        assert a["train/running_error"] == b["train/running_error"]


def _optimizer_steps(model, optimizer, x, y, loss):
    """The generic path with momentum: gradients (averaged by the model's hooks), the optimizer's step."""
    params, targets, losses = list(model.parameters()), loss.prepare(y, x), []
    for i in range(len(y)):
        value = loss.against(model(x[i : i + 1]), targets[i : i + 1])
        for p, g in zip(params, torch.autograd.grad(value, params), strict=True):
            p.grad = g
        optimizer.step()
        losses.append(value.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("average,momentum", [(True, 0.9), (False, 0.5), (True, 0.0)])
def test_tdnn_written_out_step_gives_the_optimizers_weights_in_float64(average, momentum):
    torch.manual_seed(2)
    ours = TimeDelayNet(average_shared_gradients=average).double()
    reference = TimeDelayNet(average_shared_gradients=average).double()
    reference.load_state_dict(ours.state_dict())
    loss = ClassificationLoss(**TDNN_LOSS)
    x, y = _tokens(200)
    mine = torch.optim.SGD(ours.parameters(), lr=0.3, momentum=momentum)
    step = TimeDelayOnlineStep(ours, mine)
    losses = torch.cat([step.run(x[s : s + 64], loss.prepare(y[s : s + 64], x))[0] for s in range(0, 200, 64)])
    expected = _optimizer_steps(reference, torch.optim.SGD(reference.parameters(), lr=0.3, momentum=momentum),
                                x, y, loss)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), name
    assert torch.allclose(losses, expected, rtol=0, atol=1e-13)


def test_either_tdnn_step_continues_the_others_momentum():
    """The momentum buffers live in the optimizer's state: written-out for 100 tokens, then the
    optimizer's own steps for 100 more, ends where 200 optimizer steps end."""
    torch.manual_seed(4)
    mixed, reference = TimeDelayNet().double(), TimeDelayNet().double()
    reference.load_state_dict(mixed.state_dict())
    loss = ClassificationLoss(**TDNN_LOSS)
    x, y = _tokens(200, seed=1)
    opt = torch.optim.SGD(mixed.parameters(), lr=0.3, momentum=0.9)
    TimeDelayOnlineStep(mixed, opt).run(x[:100], loss.prepare(y[:100], x))
    assert all(torch.count_nonzero(opt.state[p]["momentum_buffer"]) for p in mixed.parameters())
    _optimizer_steps(mixed, opt, x[100:], y[100:], loss)
    _optimizer_steps(reference, torch.optim.SGD(reference.parameters(), lr=0.3, momentum=0.9), x, y, loss)
    for p, q in zip(mixed.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("change,reason", [
    (dict(model=dict(integration="max")), "not a summed integration with an output bias"),
    (dict(model=dict(output_bias=False)), "not a summed integration with an output bias"),
    (dict(model=dict(nonlinearity="tanh")), "not logistic units throughout"),
    (dict(model=dict(output="none")), "not logistic units throughout"),
    (dict(nesterov=True), "SGD with weight decay, dampening or Nesterov momentum"),
    (dict(k=4), "not one update per pattern"),
])
def test_tdnn_configurations_the_written_out_step_does_not_cover(change, reason):
    model = TimeDelayNet(**change.get("model", {}))
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=change.get("nesterov", False))
    assert tdnn_refusal(model, ClassificationLoss(**TDNN_LOSS), opt, change.get("k", 1)) == reason
    assert zipcode_refusal(model, ClassificationLoss(**TDNN_LOSS), opt, 1) == "not the zip-code network"
