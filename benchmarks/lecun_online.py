"""Time per pattern of LeCun et al.'s on-line learning: the faithful run's inner loop.

The task's per-pattern update (forward, ``autograd.grad``, one fused SGD update) over the
first 2048 USPS training digits, for the hand-written ZipCodeNet and for the same network
built from PyTorch's own layers (``F.conv2d`` with the flipped, masked kernel).  The 23
faithful passes are 167,693 such steps.  Writes ``benchmarks/results/lecun_online.json``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convrepro.data.usps import USPS
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.losses import ClassificationLoss

RESULTS = Path(__file__).resolve().parent / "results"


class TorchZipCodeNet(nn.Module):
    """The same function with PyTorch's own convolution: the reference for the timing."""

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


def per_pattern_ms(model, x, y, loss) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    prepared = loss.prepare(y, x)
    start = time.perf_counter()
    for i in range(len(y)):
        out = model(x[i : i + 1])
        grads = torch.autograd.grad(loss.against(out, prepared[i : i + 1]), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-0.03)
    return (time.perf_counter() - start) / len(y) * 1e3


def main() -> int:
    data = USPS(split="train")
    x, y = data.images[:2048], data.labels[:2048]
    loss = ClassificationLoss()
    rows = {}
    makers = (("hand-written", ZipCodeNet), ("torch.nn.functional", lambda: TorchZipCodeNet(ZipCodeNet())))
    for name, make in makers:
        torch.manual_seed(0)
        model = make()
        per_pattern_ms(model, x[:200], y[:200], loss)  # warm-up
        times = [per_pattern_ms(model, x, y, loss) for _ in range(3)]
        rows[name] = statistics.median(times)
        print(f"{name:20s} {rows[name]:.3f} ms per pattern  -> 23 passes: {rows[name] * 167693 / 1e3:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lecun_online.json").write_text(json.dumps(
        {"ms_per_pattern": rows, "threads": torch.get_num_threads(), "torch": torch.__version__}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
