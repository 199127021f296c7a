"""Whole AlexNet training steps with the large convolution of another git revision, in one run.

Speed code stays only if it pays in a whole run, measured with and without it in the same
process.  This loads ``nn/functional/_conv_large.py`` as it was at ``--against`` (a commit,
tag or branch) beside today's, and times full training steps (forward, backward, SGD with
momentum and weight decay; ``benchmarks/alexnet.py``'s ``step_seconds``) of the hand-written
AlexNet with each, and of the identical ``torch.nn`` network, alternating the three so that
drifts of a shared machine hit all of them.  Medians of ``--repeats`` steps, each after an untimed one.  Writes
``benchmarks/results/conv_ab_<size>px_b<batch>.json``.

    python benchmarks/conv_ab.py --against 67886fa            # 128 px, batch 64
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine  # benchmarks/machine.py: run as a script, its folder is on the path
import torch
from alexnet import RESULTS, step_seconds, twins

from convrepro.nn.functional import conv

SOURCE = "src/convrepro/nn/functional/_conv_large.py"


def revision_module(revision: str):
    """``_conv_large`` as it was at ``revision``, imported inside the package (its relative imports work)."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{revision}:{SOURCE}"], cwd=root, capture_output=True, text=True,
                          check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "_conv_large_then.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location("convrepro.nn.functional._conv_large_then", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision whose large convolution to compare")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    pairs = {"today": conv.PAIRS["large"]}
    then = revision_module(args.against)
    pairs[args.against] = (then.large_forward, then.large_backward)
    nets = twins(args.size)

    def step(kind: str) -> float:
        """One timed training step (after an untimed one), as ``benchmarks/alexnet.py`` times it."""
        if kind in pairs:
            conv.PAIRS["large"] = pairs[kind]
        return step_seconds(nets["torch" if kind == "torch.nn" else "convrepro"], args.batch, args.size, True)

    kinds = [*pairs, "torch.nn"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            times[kind].append(step(kind))
    conv.PAIRS["large"] = pairs["today"]
    reference = statistics.median(times["torch.nn"])
    result = {"size": args.size, "batch": args.batch, "against": args.against, "threads": torch.get_num_threads(),
              "machine": machine.cpu(), "torch": torch.__version__, "steps": {}}
    for kind in kinds:
        seconds = statistics.median(times[kind])
        result["steps"][kind] = {"ms": seconds * 1e3, "ratio_to_torch_nn": reference / seconds}
        print(f"AlexNet {args.size}px batch {args.batch} training step, large convolution of {kind:10s}: "
              f"{seconds * 1e3:6.0f} ms, {reference / seconds:.3f} x torch.nn's speed")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"conv_ab_{args.size}px_b{args.batch}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    sys.exit(main())
