"""Whole-model throughput: the hand-written AlexNet against the identical torch.nn network.

Same process, same batch, same weights shapes; training (forward, backward, SGD step with
momentum and weight decay) and evaluation (forward, no grad) images per second, medians of
``--repeats`` timed steps after warm-up, the two networks alternating so that drifts of
this shared machine hit both.  Also measures the input pipeline -- the prepared uint8
store and, in the same run, the JPEG folder -- each with the augmentation done on the
device, to say whether runs are model-bound or input-bound, and on a CPU how far the
augmentation is from the passes it cannot avoid (``augmentation_floor``).  Runs unchanged on a GPU
(``--device cuda``, the default when one is present).  Writes
``benchmarks/results/alexnet_<size>px_b<batch>[_<device>].json``.

    python benchmarks/alexnet.py                       # the CPU variant: 128 px, batch 64
    python benchmarks/alexnet.py --size 227 --batch 128  # the paper's size and batch
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import machine  # benchmarks/machine.py: run as a script, its folder is on the path
import numpy as np
import torch
import torch.nn.functional as F

from convrepro.models.krizhevsky2012 import AlexNet

RESULTS = Path(__file__).resolve().parent / "results"


CPU = torch.device("cpu")
# Arithmetic settings: (autocast dtype or None, float32 matmul precision).
SETTINGS = {"fp32": (None, "highest"), "tf32": (None, "high"), "bf16": (torch.bfloat16, "high"),
            "fp16": (torch.float16, "high")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(model: AlexNet, batch: int, size: int, train: bool, device: torch.device = CPU,
                setting: str = "fp32") -> float:
    """One timed step (after an untimed one) on a batch laid out as a run's loader delivers it:
    (N, 3, S, S) over channels-last memory, what ``data/images/augment.py`` returns."""
    dtype, matmul = SETTINGS[setting]
    torch.set_float32_matmul_precision(matmul)
    x = torch.randn(batch, size, size, 3, device=device).permute(0, 3, 1, 2)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

        def step():
            opt.zero_grad()
            with autocast:
                loss = F.cross_entropy(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        step()
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - start
    model.eval()
    with torch.no_grad(), autocast:
        model(x)
        _sync(device)
        start = time.perf_counter()
        model(x)
        _sync(device)
        return time.perf_counter() - start


def twins(size: int, device: torch.device = CPU) -> dict[str, AlexNet]:
    """The hand-written AlexNet ("convrepro") and the identical torch.nn network ("torch")."""
    padding = 2 if size % 4 == 0 else 0
    return {layers: AlexNet(num_classes=10, input_size=size, conv1_padding=padding, init="he",
                            layers=layers).to(device) for layers in ("convrepro", "torch")}


def model_throughput(size: int, batch: int, repeats: int, device: torch.device = CPU,
                     setting: str = "fp32", channels_last: bool = False) -> dict:
    nets = twins(size, device)
    if channels_last:
        for net in nets.values():
            net.to(memory_format=torch.channels_last)
    out = {}
    for mode in ("train", "eval"):
        args = (batch, size, mode == "train", device, setting)
        for net in nets.values():  # warm-up: caches, oneDNN/cuDNN primitives
            step_seconds(net, *args)
        times = {k: [] for k in nets}
        for _ in range(repeats):
            for kind, net in nets.items():
                times[kind].append(step_seconds(net, *args))
        ours, ref = (batch / statistics.median(times[k]) for k in ("convrepro", "torch"))
        out[mode] = {"hand_written_images_per_second": ours, "torch_nn_images_per_second": ref,
                     "ratio": ours / ref}
    return out


def _batches(loader):
    """Training batches without end: a data set smaller than the measurement (the subset carried
    to a lent GPU) is read again, its persistent workers kept, as later epochs are."""
    while True:
        yield from loader


def input_throughput(size: int, crop: int, batch: int, batches: int, source: str,
                     device: torch.device = CPU, num_workers: int | None = None,
                     whole_batch: bool | None = None) -> dict:
    """Training batches per second as the model receives them: read (store) or decoded (jpeg),
    moved to the device, then cropped, reflected, centred and coloured there."""
    from convrepro.data.images.datamodule import ImageFolderDataModule

    dm = ImageFolderDataModule(image_size=size, crop_size=crop, batch_size=batch, check_images=False,
                               verify_checksums=False, source=source, num_workers=num_workers)
    dm.setup()
    dm.whole_batch = whole_batch
    it = _batches(dm.train_dataloader())
    x, y = next(it)  # workers started
    dm.device_transform((x.to(device), y.to(device)), "train")
    _sync(device)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        x, y = next(it)
        dm.device_transform((x.to(device, non_blocking=True), y.to(device, non_blocking=True)), "train")
        n += len(y)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"source": source, "workers": dm.num_workers, "whole_batch": whole_batch,
            "images_per_second": n / seconds}


def feed_stages(device: torch.device, workers: tuple[int, ...], images: int = 12800, crop: int = 227,
                batch: int = 128) -> dict:
    """Images/s of the store's training loader at three depths -- the loader alone, with the
    copy to the device, with the augmentation there -- over one whole epoch of a store large
    enough that no epoch boundary falls inside it (the subset carried to a lent GPU has one
    every 9 batches), for each number of loader workers.  The pixels are random (made once):
    reading and copying do not look at them."""
    pixels = np.random.default_rng(0).integers(0, 256, (images, 256, 256, 3), dtype=np.uint8)
    return {f"{w}_workers": _feed_stages(device, w, pixels, crop, batch) for w in workers}


def _feed_stages(device: torch.device, num_workers: int, pixels: np.ndarray, crop: int, batch: int) -> dict:
    from convrepro.data.images.datamodule import ImageFolderDataModule

    dm = ImageFolderDataModule(image_size=256, crop_size=crop, batch_size=batch, check_images=False,
                               verify_checksums=False, source="store", num_workers=num_workers)
    dm.setup()
    n_images = len(pixels)
    dm.splits["train"], dm.indices["train"] = (pixels, np.zeros(n_images, dtype=np.int64)), list(range(n_images))
    out = {}
    for stage in ("loader", "transfer", "augment"):
        it = iter(dm.train_dataloader())
        next(it)
        _sync(device)
        start, n = time.perf_counter(), 0
        for x, y in it:
            if stage != "loader":
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if stage == "augment":
                dm.device_transform((x, y), "train")
            n += len(y)
        _sync(device)
        out[stage] = n / (time.perf_counter() - start)
    return out


def augmentation_floor(crop: int, batch: int, rounds: int = 9, size: int = 256) -> dict:
    """Microseconds per image: the whole-batch training augmentation as committed (one and two
    threads), against the memory passes it cannot avoid -- writing the float32 batch once
    (``fill_``) and converting the uint8 windows into it once -- measured alternately in one
    process (medians of ``rounds``).  Says how far the CPU pipeline is from its floor."""
    from convrepro.data.images import augment

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen)
    mean = torch.rand(size, size, 3, generator=gen) * 255
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(torch.rand(3, 4096, generator=gen)))
    out = torch.empty(batch, crop, crop * 3)
    windows = [x[i, :crop, :crop].reshape(crop, crop * 3) for i in range(batch)]
    mirrored, threads = mean.flip(1), torch.get_num_threads()  # the data module keeps the mirror too

    def augmentation(n: int):
        def run():
            torch.set_num_threads(n)
            augment.train_batch(x, crop, mean, eigenvalues, eigenvectors, 0.1, True, 1.0, mirrored)
            torch.set_num_threads(threads)
        return run

    def convert():
        for i, w in enumerate(windows):
            out[i].copy_(w)

    parts = {"write_once": lambda: out.fill_(1.0), "convert_once": convert,
             "augmentation_1_thread": augmentation(1), f"augmentation_{threads}_threads": augmentation(threads)}
    times: dict[str, list[float]] = {k: [] for k in parts}
    for fn in parts.values():
        fn()
    for _ in range(rounds):
        for k, fn in parts.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {f"{k}_us_per_image": statistics.median(v) / batch * 1e6 for k, v in times.items()}


def ensure_store(size: int) -> None:
    from convrepro.data.images.datamodule import default_workers
    from convrepro.data.images.prepare import prepare

    prepare("imagenette2-224", size, workers=default_workers("jpeg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--input-batches", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    result = {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(), "device": str(device),
              "machine": machine.cpu(), "torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    result["model"] = model_throughput(args.size, args.batch, args.repeats, device)
    for mode, r in result["model"].items():
        print(f"AlexNet {args.size}px batch {args.batch} {mode:5s}: hand-written "
              f"{r['hand_written_images_per_second']:7.1f} img/s, torch.nn {r['torch_nn_images_per_second']:7.1f}"
              f" img/s, ratio {r['ratio']:.2f}" + (" (target >= 0.9)" if mode == "train" else ""))
    image_size = 256 if args.size == 227 else round(args.size * 256 / 224)
    ensure_store(image_size)
    result["input"] = {source: input_throughput(image_size, args.size, args.batch, args.input_batches, source, device)
                       for source in ("store", "jpeg")}
    store, jpeg = (result["input"][s]["images_per_second"] for s in ("store", "jpeg"))
    result["input"]["store_over_jpeg"] = store / jpeg
    train_rate = result["model"]["train"]["hand_written_images_per_second"]
    bound = "input-bound" if store < train_rate else "model-bound"
    result["bound"] = bound
    for source in ("store", "jpeg"):
        r = result["input"][source]
        print(f"input pipeline, {source:5s} ({r['workers']} worker(s), augmentation on {device}): "
              f"{r['images_per_second']:7.0f} img/s")
    print(f"store / jpeg: {store / jpeg:.1f}x; with the store, training is {bound}")
    if device.type == "cpu":
        floor = result["input"]["augmentation_floor"] = augmentation_floor(args.size, args.batch)
        print("augmentation, us per image: " + ", ".join(f"{k.removesuffix('_us_per_image')} {v:.0f}"
                                                         for k, v in floor.items()))
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    path = RESULTS / f"alexnet_{args.size}px_b{args.batch}{suffix}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")


if __name__ == "__main__":
    main()
