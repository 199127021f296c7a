"""The on-line steps through the layers' pairs (forwards in order, backwards in reverse, then
the update) for LeCun's zip-code network and Waibel's TDNN compute what the generic autograd
loop computes, pattern after pattern, and step aside wherever they do not apply."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.training.losses import ClassificationLoss
from convrepro.training.online import TimeDelayOnline, ZipCodeOnline, online_refusal, online_step, update_rule
from convrepro.training.sdlm import SDLM, gauss_newton_diagonal
from convrepro.training.task import ClassifierTask


def _digits(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 16, 16, generator=g, dtype=dtype) * 2 - 1)  # USPS pixels lie in [-1, 1]
    return x, torch.randint(0, 10, (n,), generator=g)


def _tokens(n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, 15, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _through_pairs(model, optimizer, x, y, loss):
    """One update per pattern, gradients from the chained pairs; each pattern's loss and output."""
    chain, params = online_step(model), list(model.parameters())
    update, targets, losses, outputs = update_rule(optimizer, params), loss.prepare(y, x), [], []
    with torch.no_grad():
        for i in range(len(y)):
            t = targets[i : i + 1]
            out, grads = chain.gradients(x[i : i + 1], lambda o, t=t: loss.gradient(o, t))
            update(grads)
            losses.append(loss.against(out, t))
            outputs.append(out[0])
    return torch.stack(losses), torch.stack(outputs)


def _through_autograd(model, optimizer, x, y, loss, own_step=False):
    """The generic path: ``autograd.grad`` through the model (its hooks average TDNN gradients),
    then the fused update, or the optimizer's own ``step``."""
    params, targets, losses, outputs = list(model.parameters()), loss.prepare(y, x), [], []
    update = update_rule(optimizer, params)
    for i in range(len(y)):
        out = model(x[i : i + 1])
        value = loss.against(out, targets[i : i + 1])
        grads = torch.autograd.grad(value, params)
        if own_step:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
        else:
            update(grads)
        losses.append(value.detach())
        outputs.append(out.detach()[0])
    return torch.stack(losses), torch.stack(outputs)


def _twins(make, seed):
    torch.manual_seed(seed)
    ours, reference = make().double(), make().double()
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def _same_weights(ours, reference, atol=1e-12):
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=0, atol=atol), name


def test_the_pairs_give_the_autograd_weights_after_300_patterns_in_float64():
    ours, reference = _twins(ZipCodeNet, 3)
    with torch.no_grad():  # weights outside H2's table must be left alone by both paths
        ours.h2.conv.weight.add_(0.5 * (1 - ours.h2.conv.connection_mask))
        reference.h2.conv.weight.copy_(ours.h2.conv.weight)
    outside = ours.h2.conv.weight[~ours.h2.conv.connection_table].clone()
    x, y = _digits(300)
    loss = ClassificationLoss()
    losses, outs = _through_pairs(ours, torch.optim.SGD(ours.parameters(), lr=0.03), x, y, loss)
    expected, expected_outputs = _through_autograd(reference, torch.optim.SGD(reference.parameters(), lr=0.03),
                                                   x, y, loss)
    _same_weights(ours, reference)
    assert not torch.equal(ours.h1.conv.weight, _twins(ZipCodeNet, 3)[0].h1.conv.weight)  # it did learn
    assert torch.equal(ours.h2.conv.weight[~ours.h2.conv.connection_table], outside)
    assert torch.allclose(losses, expected, rtol=0, atol=1e-13)
    # each pattern's outputs as the network gave them before that pattern's update
    assert torch.allclose(outs, expected_outputs, rtol=0, atol=1e-13)


def test_the_pairs_with_sdlm_give_the_generic_sdlm_weights_in_float64():
    """SDLM (the paper's own method): each weight's step size lr / (mu + h), h the Gauss-Newton
    diagonal estimated on 500 patterns as the task does, then 200 on-line updates both ways."""
    ours, reference = _twins(ZipCodeNet, 6)
    loss = ClassificationLoss()
    x, y = _digits(700, seed=2)
    optimizers = []
    for model in (ours, reference):
        opt = SDLM(model.parameters(), lr=0.0005, mu=0.02)
        h = gauss_newton_diagonal(model, x[:500], loss.output_curvature)
        opt.set_curvature({p: v / 500 for p, v in h.items()})
        optimizers.append(opt)
    assert online_refusal(ours, loss, optimizers[0], 1) is None
    losses, _ = _through_pairs(ours, optimizers[0], x[500:], y[500:], loss)
    expected, _ = _through_autograd(reference, optimizers[1], x[500:], y[500:], loss)
    _same_weights(ours, reference)
    assert torch.allclose(losses, expected, rtol=0, atol=1e-13)


TDNN_LOSS = dict(name="mse", target_low=0.0, target_high=1.0, num_classes=3)


@pytest.mark.parametrize("average,momentum,integration", [(True, 0.9, "sum"), (False, 0.5, "sum"),
                                                          (True, 0.0, "sum"), (True, 0.9, "mean"),
                                                          (False, 0.9, "max"), (False, 0.9, "sum_sq")])
def test_tdnn_pairs_give_the_optimizers_weights_in_float64(average, momentum, integration):
    make = lambda: TimeDelayNet(average_shared_gradients=average, integration=integration)  # noqa: E731
    ours, reference = _twins(make, 2)
    loss = ClassificationLoss(**TDNN_LOSS)
    x, y = _tokens(200)
    losses, _ = _through_pairs(ours, torch.optim.SGD(ours.parameters(), lr=0.3, momentum=momentum), x, y, loss)
    expected, _ = _through_autograd(reference, torch.optim.SGD(reference.parameters(), lr=0.3, momentum=momentum),
                                    x, y, loss, own_step=True)
    _same_weights(ours, reference)
    assert torch.allclose(losses, expected, rtol=0, atol=1e-13)


def test_either_tdnn_step_continues_the_others_momentum():
    """The momentum buffers live in the optimizer's state: the pairs for 100 tokens, then the
    optimizer's own steps for 100 more, ends where 200 optimizer steps end."""
    mixed, reference = _twins(TimeDelayNet, 4)
    loss = ClassificationLoss(**TDNN_LOSS)
    x, y = _tokens(200, seed=1)
    opt = torch.optim.SGD(mixed.parameters(), lr=0.3, momentum=0.9)
    _through_pairs(mixed, opt, x[:100], y[:100], loss)
    assert all(torch.count_nonzero(opt.state[p]["momentum_buffer"]) for p in mixed.parameters())
    _through_autograd(mixed, opt, x[100:], y[100:], loss, own_step=True)
    _through_autograd(reference, torch.optim.SGD(reference.parameters(), lr=0.3, momentum=0.9), x, y, loss,
                      own_step=True)
    _same_weights(mixed, reference)


@pytest.mark.parametrize("change,reason", [
    (dict(model=dict(nonlinearity="tanh")), "a nonlinearity without a pair"),
    (dict(model=dict(nonlinearity="relu")), "a nonlinearity without a pair"),
    (dict(model=dict(subsampling="decimation")), "dropout or decimation layers"),
    (dict(model=dict(dropout=0.25)), "dropout or decimation layers"),
    (dict(loss="cross_entropy"), "not the MSE loss"),
    (dict(k=2), "not one update per pattern"),
    (dict(decay=1e-4), "SGD with weight decay, dampening or Nesterov momentum"),
    (dict(adam=True), "neither SGD nor SDLM"),
])
def test_every_other_zipcode_configuration_keeps_the_generic_path(change, reason):
    model = ZipCodeNet(**change.get("model", {}))
    loss = ClassificationLoss(change.get("loss", "mse"))
    opt = (torch.optim.Adam(model.parameters()) if change.get("adam") else
           torch.optim.SGD(model.parameters(), lr=0.03, weight_decay=change.get("decay", 0.0)))
    assert online_refusal(model, loss, opt, change.get("k", 1)) == reason
    assert online_refusal(ZipCodeNet(), ClassificationLoss(), torch.optim.SGD(ZipCodeNet().parameters(), lr=0.1),
                          1) is None


@pytest.mark.parametrize("change,reason", [
    (dict(model=dict(output_bias=False)), "no output bias"),
    (dict(model=dict(nonlinearity="tanh")), "a nonlinearity without a pair"),
    (dict(model=dict(output="none")), "a nonlinearity without a pair"),
    (dict(nesterov=True), "SGD with weight decay, dampening or Nesterov momentum"),
    (dict(k=4), "not one update per pattern"),
])
def test_tdnn_configurations_the_pairs_do_not_cover(change, reason):
    model = TimeDelayNet(**change.get("model", {}))
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=change.get("nesterov", False))
    assert online_refusal(model, ClassificationLoss(**TDNN_LOSS), opt, change.get("k", 1)) == reason
    plain = torch.optim.SGD(model.parameters(), lr=0.3)
    assert online_refusal(torch.nn.Linear(2, 2), ClassificationLoss(**TDNN_LOSS), plain, 1) == \
        "neither the zip-code network nor the time-delay network"


def _trained_through_lightning(online: str, network: str, x, y):
    torch.manual_seed(5)
    if network == "zipcode":
        model, loss, momentum, chain = ZipCodeNet(), ClassificationLoss(), 0.0, ZipCodeOnline
    else:
        model, loss, momentum, chain = TimeDelayNet(), ClassificationLoss(**TDNN_LOSS), 0.9, TimeDelayOnline
    task = ClassifierTask(model, loss, lambda p: torch.optim.SGD(p, lr=0.03, momentum=momentum), ["test"],
                          scheduler={"factory": lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)},
                          patterns_per_update=1, online_step=online)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    trainer = pl.Trainer(max_epochs=2, precision="64-true", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, accelerator="cpu", devices=1)
    trainer.fit(task, train_dataloaders=loader)
    assert task.history[0]["train/running_error"] >= 0  # the pass's running figures were recorded
    assert isinstance(task._chain, chain) == (online == "pairs")  # the path taken
    return {k: v.clone() for k, v in model.state_dict().items()}, task.history


@pytest.mark.parametrize("network", ["zipcode", "tdnn"])
def test_the_task_trains_the_same_weights_on_either_step_with_a_schedule(network):
    x, y = _digits(150, torch.float32, seed=1) if network == "zipcode" else _tokens(150, torch.float32, seed=1)
    pairs, h1 = _trained_through_lightning("pairs", network, x, y)
    generic, h2 = _trained_through_lightning("autograd", network, x, y)
    for name in pairs:
        assert torch.allclose(pairs[name].double(), generic[name].double(), rtol=0, atol=1e-12), name
    for a, b in zip(h1, h2, strict=True):  # the running loss and error of each pass as well
        assert a["train/running_loss"] == pytest.approx(b["train/running_loss"], abs=1e-12)
        assert a["train/running_error"] == b["train/running_error"]
