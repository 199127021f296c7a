"""Time per pattern of the 1989 papers' on-line learning, measured in one run.

LeCun et al.'s zip-code network, four ways:

* ``native 2022``: the zip-code network as a 2022 reproduction writes it in plain PyTorch
  (``F.conv2d`` on each of H2's three connection slices, autograd ``backward()``, the
  fused SGD optimizer step): the baseline the project's goals are set against;
* ``torch.nn.functional twin``: the project's network with PyTorch's convolution
  (``F.conv2d`` with the flipped, masked kernel), the task's update;
* ``generic (autograd)``: the hand-written layers and the task's generic per-pattern loop
  (``training.online_step=autograd``: forward, ``autograd.grad``, one fused update);
* ``pairs``: the task's default for the faithful recipe (``training.online_step=pairs``,
  ``training/online.py``): the layers' forward/backward pairs chained by hand.

Waibel et al.'s TDNN (SGD with momentum 0.9, shared gradients averaged), three ways:
``native 2022`` (``nn.Conv1d``, ``backward()``, the fused SGD optimizer with the layers'
learning rates divided by their 13 and 9 copies), ``generic (autograd)`` (the task's loop:
``autograd.grad``, the model's averaging hooks, the optimizer's step) and ``pairs``
(``training/online.py``).

Each is timed over 2048 patterns (the first USPS training digits; random 16 x 15 tokens for
the TDNN, whose arithmetic does not depend on the values), single-threaded as the task runs
its on-line loop, median of 3 after a warm-up.  ``--full-run`` also times the whole faithful
runs (``convrepro.train experiment=lecun1989`` and ``experiment=waibel1989``, every pass with
its evaluation, start-up and recording, into a temporary store made beforehand) and gives
each one's ratio to the same number of native steps (passes x training patterns).
Writes ``benchmarks/results/online.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # benchmarks/machine.py: run as a script, its folder is on the path
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import nn

from convrepro.data.usps import USPS
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.tracking.store import check
from convrepro.training.losses import ClassificationLoss
from convrepro.training.online import online_step, update_rule

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


class Native2022(nn.Module):
    """The zip-code network in plain PyTorch, the way a 2022 reproduction wrote it."""

    def __init__(self):
        super().__init__()
        winit = lambda fan_in, *shape: (torch.rand(*shape) - 0.5) * 2 * 2.4 / fan_in ** 0.5  # noqa: E731
        self.H1w = nn.Parameter(winit(5 * 5 * 1, 12, 1, 5, 5))
        self.H1b = nn.Parameter(torch.zeros(12, 8, 8))
        self.H2w = nn.Parameter(winit(5 * 5 * 8, 12, 8, 5, 5))
        self.H2b = nn.Parameter(torch.zeros(12, 4, 4))
        self.H3w = nn.Parameter(winit(4 * 4 * 12, 4 * 4 * 12, 30))
        self.H3b = nn.Parameter(torch.zeros(30))
        self.outw = nn.Parameter(winit(30, 30, 10))
        self.outb = nn.Parameter(-torch.ones(10))

    def forward(self, x):
        x = F.pad(x, (2, 2, 2, 2), "constant", -1.0)
        x = torch.tanh(F.conv2d(x, self.H1w, stride=2) + self.H1b)
        x = F.pad(x, (2, 2, 2, 2), "constant", -1.0)
        slice1 = F.conv2d(x[:, 0:8], self.H2w[0:4], stride=2)
        slice2 = F.conv2d(x[:, 4:12], self.H2w[4:8], stride=2)
        slice3 = F.conv2d(torch.cat((x[:, 0:4], x[:, 8:12]), dim=1), self.H2w[8:12], stride=2)
        x = torch.tanh(torch.cat((slice1, slice2, slice3), dim=1) + self.H2b)
        x = torch.tanh(x.flatten(start_dim=1) @ self.H3w + self.H3b)
        return torch.tanh(x @ self.outw + self.outb)


class TorchZipCodeNet(nn.Module):
    """The project's network with PyTorch's own convolution."""

    def __init__(self, ours: ZipCodeNet):
        super().__init__()
        self.ours = ours

    def forward(self, x):
        o = self.ours
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0), o.h1.conv.weight.flip(-2, -1), stride=2) + o.h1.bias
        x = o.act1(x)
        w2 = o.h2.conv.weight * o.h2.conv.connection_mask
        x = F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0), w2.flip(-2, -1), stride=2) + o.h2.bias
        x = o.act2(x).flatten(1)
        return o.act_out(o.output(o.act3(o.h3(x))))


def native_ms(x, targets) -> float:
    model = Native2022()
    return _native_loop(model, _fused_sgd(model.parameters(), lr=0.03), x, targets)


def _fused_sgd(params, **settings) -> torch.optim.SGD:
    try:
        return torch.optim.SGD(params, fused=True, **settings)
    except (RuntimeError, TypeError):  # a build without the fused CPU kernel
        return torch.optim.SGD(params, foreach=True, **settings)


def _native_loop(model, optimizer, x, targets) -> float:
    """A 2022 on-line loop: forward, the mean squared error, ``backward()``, the optimizer's step."""
    start = time.perf_counter()
    for i in range(len(x)):
        loss = torch.mean((model(x[i : i + 1]) - targets[i : i + 1]) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / len(x) * 1e3


def task_loop_ms(model, x, targets, loss) -> float:
    """The task's generic per-pattern loop (``ClassifierTask._per_pattern_updates``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    for i in range(len(x)):
        grads = torch.autograd.grad(loss.against(model(x[i : i + 1]), targets[i : i + 1]), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-0.03)
    return (time.perf_counter() - start) / len(x) * 1e3


def pairs_ms(model, optimizer, x, targets, loss) -> float:
    """The task's default on-line step (``ClassifierTask._per_pattern_updates`` with the chained
    pairs: each pattern's gradients and update, the batch's losses at its end)."""
    chain, update = online_step(model), update_rule(optimizer, list(model.parameters()))
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(x), 256):  # the task's loader batches
            outs, batch = [], slice(first, first + 256)
            for pattern, target in zip(x[batch].split(1), targets[batch].split(1), strict=True):
                out, grads = chain.gradients(pattern, lambda o, t=target: loss.gradient(o, t))
                update(grads)
                outs.append(out)
            loss.per_pattern(torch.cat(outs), targets[first : first + 256])
    return (time.perf_counter() - start) / len(x) * 1e3


class NativeTDNN(nn.Module):
    """The TDNN in plain PyTorch (its own Conv1d), the way a 2022 reproduction would write it."""

    def __init__(self):
        super().__init__()
        self.hidden1, self.hidden2 = nn.Conv1d(16, 8, 3), nn.Conv1d(8, 3, 5)
        self.bias = nn.Parameter(torch.zeros(3))
        for p in self.parameters():
            nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x):
        h = torch.sigmoid(self.hidden2(torch.sigmoid(self.hidden1(x))))
        return torch.sigmoid(h.sum(-1) + self.bias)


def native_tdnn_ms(x, targets) -> float:
    model = NativeTDNN()
    groups = [{"params": model.hidden1.parameters(), "lr": 0.3 / 13}, {"params": model.hidden2.parameters(),
              "lr": 0.3 / 9}, {"params": [model.bias]}]
    return _native_loop(model, _fused_sgd(groups, lr=0.3, momentum=0.9), x, targets)


def generic_tdnn_ms(x, targets, loss) -> float:
    model = TimeDelayNet(average_shared_gradients=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    params = list(model.parameters())
    start = time.perf_counter()
    for i in range(len(x)):  # ClassifierTask._per_pattern_updates with momentum (the optimizer's step)
        grads = torch.autograd.grad(loss.against(model(x[i : i + 1]), targets[i : i + 1]), params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
    return (time.perf_counter() - start) / len(x) * 1e3


def full_run(experiment: str) -> tuple[float, int]:
    """Wall seconds of the whole faithful run, started as `make reproduce-...` starts it (into
    a throw-away store), and the number of on-line updates it made (passes x patterns)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "CONVREPRO_PROJECT_DIR": tmp}
        # The store exists before the clock starts, as it does for every run after a user's first
        # (creating one runs MLflow's migrations: a few seconds, once).
        check(f"sqlite:///{tmp}/mlflow.db")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "convrepro.train", f"experiment={experiment}",
                        "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}/out"],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name(experiment.split("_")[0]).experiment_id])
        return seconds, int(run.data.params["trainer.max_epochs"]) * int(run.data.params["data.count.train"])


def _measure(makers: dict, x, targets) -> dict:
    rows = {}
    for name, measure in makers.items():
        torch.manual_seed(0)
        measure(x[:256], targets[:256])  # warm-up
        times = [measure(x, targets) for _ in range(3)]
        rows[name] = {"ms_per_pattern": statistics.median(times), "spread": [min(times), max(times)]}
    native = rows["native 2022"]["ms_per_pattern"]
    for name, row in rows.items():
        row["ratio_to_native"] = row["ms_per_pattern"] / native
        print(f"  {name:26s} {row['ms_per_pattern']:10.3f} ms  {row['ratio_to_native']:6.2f} x native")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-run", action="store_true",
                        help="also time the whole faithful LeCun and Waibel runs (a few minutes)")
    args = parser.parse_args(argv)
    result = {"threads": 1, "torch": torch.__version__, "machine": machine.cpu(), "cpus": os.cpu_count(),
              "load_average_before": os.getloadavg()}
    torch.set_num_threads(1)  # as the task's on-line loop runs (convrepro.threads)
    data = USPS(split="train")
    x, y = data.images[:2048], data.labels[:2048]
    loss = ClassificationLoss()
    print("LeCun et al. 1989, per pattern:")
    result["lecun1989"] = _measure({
        "native 2022": native_ms,
        "torch.nn.functional twin": lambda xs, ts: task_loop_ms(TorchZipCodeNet(ZipCodeNet()), xs, ts, loss),
        "generic (autograd)": lambda xs, ts: task_loop_ms(ZipCodeNet(), xs, ts, loss),
        "pairs": lambda xs, ts: pairs_ms(m := ZipCodeNet(), torch.optim.SGD(m.parameters(), lr=0.03), xs, ts, loss),
    }, x, loss.prepare(y, x))
    tokens = torch.randn(2048, 16, 15, generator=torch.Generator().manual_seed(0))
    tdnn_loss = ClassificationLoss(target_low=0.0, target_high=1.0, num_classes=3)
    labels = torch.randint(0, 3, (2048,), generator=torch.Generator().manual_seed(1))
    print("Waibel et al. 1989, per pattern:")
    result["waibel1989"] = _measure({
        "native 2022": native_tdnn_ms,
        "generic (autograd)": lambda xs, ts: generic_tdnn_ms(xs, ts, tdnn_loss),
        "pairs": lambda xs, ts: pairs_ms(m := TimeDelayNet(average_shared_gradients=True),
                                         torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9), xs, ts, tdnn_loss),
    }, tokens, tdnn_loss.prepare(labels, tokens))
    if args.full_run:
        torch.set_num_threads(os.cpu_count() or 1)
        for experiment in ("lecun1989", "waibel1989"):
            seconds, updates = full_run(experiment)
            baseline = result[experiment]["native 2022"]["ms_per_pattern"] * updates / 1e3
            result[experiment]["full_faithful_run"] = {"seconds": seconds, "updates": updates,
                                                      "native_steps_seconds": baseline, "ratio": seconds / baseline}
            print(f"{experiment} faithful run end to end: {seconds:.0f} s = {seconds / baseline:.2f} x "
                  f"{updates:,} native steps ({baseline:.0f} s)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
