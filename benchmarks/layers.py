"""Forward + backward time of every hand-written layer against PyTorch's own, on the papers' shapes.

Run with ``make bench`` (or ``python benchmarks/layers.py``).  Prints a table of medians
and the ratio hand-written / PyTorch (with its range over rounds) and writes
``benchmarks/results/layers.json`` with the machine and library versions;
``--competing 1`` measures the same beside one busy single-threaded process
(``layers_competing.json``).  The PyTorch reference computes the same function: the
convolution as ``F.conv2d`` with the flipped kernel (and masked kernel for a connection
table), LRN with PyTorch's alpha * size convention.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import machine  # benchmarks/machine.py: run as a script, its folder is on the path
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


def _leaf_channels_last(*shape):
    return torch.randn(*shape).to(memory_format=torch.channels_last).requires_grad_(True)


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
    # In the network these layers read the convolution's channels-last output.
    out.append(Case(f"AlexNet pool1 3/2 channels-last (batch {n})", lambda: [_leaf_channels_last(n, 96, 55, 55)],
                    lambda x: cf.max_pool2d(x, 3, 2), lambda x: F.max_pool2d(x, 3, 2)))
    out.append(Case(f"AlexNet norm1 LRN channels-last (batch {n})", lambda: [_leaf_channels_last(n, 96, 55, 55)],
                    lambda x: cf.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
                    lambda x: F.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)))
    return out


def _calls(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[int], float]:
    """A timer of ``n`` forward + backward calls, seconds per call."""
    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            y = fn(*inputs)
            y.backward(torch.ones_like(y))
            for t in inputs:
                t.grad = None
        return (time.perf_counter() - t0) / n
    return run


def _paired(ours: Callable, reference: Callable, inputs: list[torch.Tensor], rounds: int,
            block_seconds: float) -> tuple[list[float], list[float]]:
    """Per round, a block of hand-written calls then as many of PyTorch's.

    The two sides alternate, so a slow spell of a shared machine lands on both sides of
    most rounds' ratio instead of on one side of the comparison.
    """
    a, b = _calls(ours, inputs), _calls(reference, inputs)
    a(2), b(2)  # warm-up: allocator, thread pool, lazy initialisation, index caches
    n = max(1, int(block_seconds / max(a(3), b(3))))
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(a(n))
        times_b.append(b(n))
    return times_a, times_b


def _competitor(stop) -> None:
    torch.set_num_threads(1)
    m = torch.randn(512, 512)
    while not stop.is_set():
        m = (m @ m).clamp_(-1, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="alternating blocks per layer")
    parser.add_argument("--block-seconds", type=float, default=0.2,
                        help="length of each block of calls (at least one call)")
    parser.add_argument("--competing", type=int, default=0, metavar="N",
                        help="run N single-threaded matrix-multiply processes meanwhile")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--output", type=Path, default=None,
                        help="default: results/layers.json (layers_competing.json with --competing)")
    args = parser.parse_args(argv)
    output = args.output or RESULTS / ("layers_competing.json" if args.competing else "layers.json")

    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    competitors = [ctx.Process(target=_competitor, args=(stop,), daemon=True) for _ in range(args.competing)]
    for p in competitors:
        p.start()
    try:
        rows = _measure(args)
    finally:
        stop.set()
        for p in competitors:
            p.join(timeout=10)
    report = {
        "machine": {"platform": platform.platform(), "cpu": machine.cpu(),
                    "python": platform.python_version(), "threads": torch.get_num_threads(),
                    "cores": os.cpu_count(), "load_before": os.getloadavg()[0]},
        "libraries": {"torch": torch.__version__},
        "competing_processes": args.competing,
        "statistic": (f"{args.rounds} rounds of alternating blocks (>= {args.block_seconds} s, same number "
                      "of calls each side); times are medians over rounds, ratio the median of the "
                      "per-round ratios with its range"),
        "results": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {output}")
    return 0


def _measure(args) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    header = (f"{'layer (forward + backward)':36s} {'hand-written':>13s} {'PyTorch':>11s} "
              f"{'ratio':>6s} {'range over rounds':>18s}")
    print(header)
    print("-" * len(header))
    for case in cases():
        if args.filter not in case.name:
            continue
        ours, ref = _paired(case.ours, case.reference, case.inputs(), args.rounds, args.block_seconds)
        ratios = sorted(a / b for a, b in zip(ours, ref, strict=True))
        ratio = statistics.median(ratios)
        rows.append({"layer": case.name, "ours_ms": statistics.median(ours) * 1e3,
                     "torch_ms": statistics.median(ref) * 1e3, "ratio": ratio,
                     "ratio_min": ratios[0], "ratio_max": ratios[-1]})
        flag = "" if ratio <= 1.5 else "  > 1.5"
        print(f"{case.name:36s} {rows[-1]['ours_ms']:10.3f} ms {rows[-1]['torch_ms']:8.3f} ms "
              f"{ratio:6.2f} {ratios[0]:8.2f} - {ratios[-1]:.2f}{flag}")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
