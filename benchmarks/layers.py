"""Forward + backward time of every hand-written layer against PyTorch's own, on the papers' shapes.

Run with ``make bench`` (or ``python benchmarks/layers.py``).  Prints a table of medians
and the ratio hand-written / PyTorch and writes ``benchmarks/results/layers.json`` with
the machine and library versions.  The PyTorch reference computes the same function: the
convolution as ``F.conv2d`` with the flipped kernel (and masked kernel for a connection
table), LRN with PyTorch's alpha * size convention.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from convrepro.nn import functional as cf

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    name: str
    inputs: Callable[[], list[torch.Tensor]]  # fresh leaf tensors (grad flags set)
    ours: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]


def _leaf(*shape, grad=True):
    return torch.randn(*shape).requires_grad_(grad)


def _lecun_table() -> torch.Tensor:
    table = torch.zeros(12, 12, dtype=torch.bool)
    table[0:4, 0:8] = True
    table[4:8, 4:12] = True
    table[8:12, 0:4] = True
    table[8:12, 8:12] = True
    return table


def cases() -> list[Case]:
    out: list[Case] = []
    for b in (1, 64):
        out += [
            Case(f"TDNN hidden 1 (batch {b})",
                 lambda b=b: [_leaf(b, 16, 15), _leaf(8, 16, 3), _leaf(8)],
                 lambda x, w, bias: cf.conv1d(x, w, bias),
                 lambda x, w, bias: F.conv1d(x, w.flip(-1), bias)),
            Case(f"TDNN hidden 2 (batch {b})",
                 lambda b=b: [_leaf(b, 8, 13), _leaf(3, 8, 5), _leaf(3)],
                 lambda x, w, bias: cf.conv1d(x, w, bias),
                 lambda x, w, bias: F.conv1d(x, w.flip(-1), bias)),
            Case(f"LeCun H1 (batch {b})",
                 lambda b=b: [_leaf(b, 1, 16, 16, grad=False), _leaf(12, 1, 5, 5), _leaf(12, 8, 8)],
                 lambda x, w, bias: cf.conv2d(x, w, bias, stride=2, padding=2, pad_value=-1.0),
                 lambda x, w, bias: F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0), w.flip(-2, -1),
                                             stride=2) + bias),
        ]
        table = _lecun_table()[:, :, None, None].float()
        out.append(
            Case(f"LeCun H2 (batch {b})",
                 lambda b=b: [_leaf(b, 12, 8, 8), _leaf(12, 12, 5, 5), _leaf(12, 4, 4)],
                 lambda x, w, bias, t=table: cf.conv2d(x, w * t, bias, stride=2, padding=2,
                                                       pad_value=-1.0),
                 lambda x, w, bias, t=table: F.conv2d(F.pad(x, (2, 2, 2, 2), value=-1.0),
                                                      (w * t).flip(-2, -1), stride=2) + bias))
    n = 32
    convs = [  # AlexNet at 224 px with padding 2 on conv1 (55x55 maps, as the paper states)
        ("conv1", (n, 3, 224, 224), (96, 3, 11, 11), 4, 2, 1, False),
        ("conv2", (n, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, True),
        ("conv3", (n, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1, True),
        ("conv4", (n, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2, True),
        ("conv5", (n, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2, True),
    ]
    for name, xs, ws, s, p, g, xg in convs:
        out.append(Case(
            f"AlexNet {name} (batch {n})",
            lambda xs=xs, ws=ws, xg=xg: [_leaf(*xs, grad=xg), _leaf(*ws), _leaf(ws[0])],
            lambda x, w, bias, s=s, p=p, g=g: cf.conv2d(x, w, bias, stride=s, padding=p, groups=g),
            lambda x, w, bias, s=s, p=p, g=g: F.conv2d(x, w.flip(-2, -1), bias, stride=s,
                                                       padding=p, groups=g)))
    for name, shape in (("pool1", (n, 96, 55, 55)), ("pool2", (n, 256, 27, 27)),
                        ("pool5", (n, 256, 13, 13))):
        out.append(Case(f"AlexNet {name} 3/2 (batch {n})", lambda shape=shape: [_leaf(*shape)],
                        lambda x: cf.max_pool2d(x, 3, 2), lambda x: F.max_pool2d(x, 3, 2)))
    for name, shape in (("norm1", (n, 96, 55, 55)), ("norm2", (n, 256, 27, 27))):
        out.append(Case(f"AlexNet {name} LRN (batch {n})", lambda shape=shape: [_leaf(*shape)],
                        lambda x: cf.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
                        lambda x: F.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)))
    return out


def _time(fn: Callable, inputs: list[torch.Tensor], repeats: int, min_seconds: float) -> float:
    def once():
        y = fn(*inputs)
        y.backward(torch.ones_like(y))
        for t in inputs:
            t.grad = None

    once()  # warm-up: allocator, thread pool, lazy initialisation
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 1000):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--output", type=Path, default=RESULTS / "layers.json")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    rows = []
    header = f"{'layer (forward + backward)':44s} {'hand-written':>13s} {'PyTorch':>10s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for case in cases():
        if args.filter not in case.name:
            continue
        inputs = case.inputs()
        ours = _time(case.ours, inputs, args.repeats, args.min_seconds)
        ref = _time(case.reference, inputs, args.repeats, args.min_seconds)
        ratio = ours / ref
        rows.append({"layer": case.name, "ours_ms": ours * 1e3, "torch_ms": ref * 1e3,
                     "ratio": ratio})
        flag = "" if ratio <= 1.5 else "  > 1.5"
        print(f"{case.name:44s} {ours * 1e3:10.3f} ms {ref * 1e3:7.3f} ms {ratio:6.2f}{flag}")
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "threads": torch.get_num_threads()},
        "libraries": {"torch": torch.__version__},
        "statistic": f"median of >= {args.repeats} runs (and >= {args.min_seconds} s) per layer",
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
