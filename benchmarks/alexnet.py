"""Whole-model throughput: the hand-written AlexNet against the identical torch.nn network.

Same process, same batch, same weights shapes; training (forward, backward, SGD step with
momentum and weight decay) and evaluation (forward, no grad) images per second, medians of
``--repeats`` timed steps after warm-up, the two networks alternating so that drifts of
this shared machine hit both.  Also measures the input pipeline (JPEG decode and the
paper's augmentation) with the workers the datamodule uses, to say whether CPU runs are
model-bound or input-bound.  Writes ``benchmarks/results/alexnet.json``.

    python benchmarks/alexnet.py                       # the CPU variant: 128 px, batch 64
    python benchmarks/alexnet.py --size 227 --batch 128  # the paper's size and batch
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from convrepro.models.krizhevsky2012 import AlexNet

RESULTS = Path(__file__).resolve().parent / "results"


def _step_times(model: AlexNet, batch: int, size: int, train: bool) -> float:
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start


def model_throughput(size: int, batch: int, repeats: int) -> dict:
    padding = 2 if size % 4 == 0 else 0
    nets = {layers: AlexNet(num_classes=10, input_size=size, conv1_padding=padding, init="he", layers=layers)
            for layers in ("convrepro", "torch")}
    out = {}
    for mode in ("train", "eval"):
        for net in nets.values():  # warm-up: workspaces, caches, oneDNN primitives
            _step_times(net, batch, size, mode == "train")
        times = {k: [] for k in nets}
        for _ in range(repeats):
            for layers, net in nets.items():
                times[layers].append(_step_times(net, batch, size, mode == "train"))
        ours, ref = (batch / statistics.median(times[k]) for k in ("convrepro", "torch"))
        out[mode] = {"hand_written_images_per_second": ours, "torch_nn_images_per_second": ref,
                     "ratio": ours / ref}
    return out


def input_throughput(size: int, crop: int, batch: int, batches: int) -> dict:
    from convrepro.data.images.datamodule import ImageFolderDataModule

    dm = ImageFolderDataModule(image_size=size, crop_size=crop, batch_size=batch, check_images=False,
                               verify_checksums=False)
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # workers started
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)[1])
    seconds = time.perf_counter() - start
    return {"workers": dm.num_workers, "images_per_second": n / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--input-batches", type=int, default=20)
    args = parser.parse_args()
    result = {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    result["model"] = model_throughput(args.size, args.batch, args.repeats)
    for mode, r in result["model"].items():
        print(f"AlexNet {args.size}px batch {args.batch} {mode:5s}: hand-written "
              f"{r['hand_written_images_per_second']:7.1f} img/s, torch.nn {r['torch_nn_images_per_second']:7.1f}"
              f" img/s, ratio {r['ratio']:.2f} (target >= 0.8)")
    image_size = round(args.size * 256 / 224)
    result["input"] = input_throughput(image_size, args.size, args.batch, args.input_batches)
    train_rate = result["model"]["train"]["hand_written_images_per_second"]
    bound = "input-bound" if result["input"]["images_per_second"] < train_rate else "model-bound"
    result["bound"] = bound
    print(f"input pipeline ({result['input']['workers']} worker(s), decode + augmentation): "
          f"{result['input']['images_per_second']:.0f} img/s alone -> training is {bound}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"alexnet_{args.size}px_b{args.batch}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
