"""The GPU section of ``make bench`` (``make bench-gpu``): AlexNet on one CUDA device, written so
that the numbers the project has to trust can be re-measured on any lent GPU in under 5 minutes.

* whole AlexNet, hand-written against the identical torch.nn network: training and evaluation
  images/s at fp32 (strict), TF32, bf16 and fp16 autocast, each also with channels_last;
* every AlexNet layer alone (forward + backward), hand-written / PyTorch's own, at TF32 --
  with the Triton kernels (the default on CUDA) and on the tensor-op path (CONVREPRO_TRITON=0),
  and the whole network at TF32 on the tensor-op path for comparison;
* the input pipeline: the prepared store and the JPEG folder, augmentation on the GPU; and the
  store's loader by stage (alone, + copy to the GPU, + augmentation) over a whole epoch;
* one end-to-end Imagenette epoch through ``convrepro-train`` with its final evaluation on the GPU.

On a machine without CUDA it says so in one line and exits 0.  Writes ``results/gpu.json``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alexnet import RESULTS, ensure_store, feed_stages, input_throughput, model_throughput  # noqa: E402

from convrepro.nn import functional as cf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_ratios(batch: int, repeats: int) -> dict[str, float]:
    """fwd+bwd seconds, hand-written / PyTorch, on AlexNet's shapes at 227 px (TF32 allowed)."""
    torch.set_float32_matmul_precision("high")
    dev = "cuda"

    def case(shape, ours, ref):
        x = torch.randn(*shape, device=dev, requires_grad=True)

        def run(f):
            return lambda: f(x).sum().backward()
        return _time(run(ours), repeats) / _time(run(ref), repeats)

    out = {}
    for name, (c_in, size, c_out, k, stride, pad, groups) in {
            "conv1": (3, 227, 96, 11, 4, 0, 1), "conv2": (96, 27, 256, 5, 1, 2, 2), "conv3": (256, 13, 384, 3, 1, 1, 1),
            "conv4": (384, 13, 384, 3, 1, 1, 2), "conv5": (384, 13, 256, 3, 1, 1, 2)}.items():
        w = torch.randn(c_out, c_in // groups, k, k, device=dev, requires_grad=True)
        out[name] = case((batch, c_in, size, size),
                         lambda x, w=w, s=stride, p=pad, g=groups: cf.conv2d(x, w, stride=s, padding=p, groups=g),
                         lambda x, w=w, s=stride, p=pad, g=groups: F.conv2d(x, w.flip(-2, -1), stride=s, padding=p,
                                                                             groups=g))
    for name, (c, size) in {"pool1": (96, 55), "pool2": (256, 27), "pool5": (256, 13)}.items():
        out[name] = case((batch, c, size, size), lambda x: cf.max_pool2d(x, 3, 2), lambda x: F.max_pool2d(x, 3, 2))
    out["lrn1"] = case((batch, 96, 55, 55), lambda x: cf.local_response_norm(x, 5, 1e-4, 0.75, 2.0),
                       lambda x: F.local_response_norm(x, 5, 5e-4, 0.75, 2.0))
    return out


def end_to_end(precision: str, epochs: int, device: str = "gpu") -> dict:
    """``epochs`` Imagenette epochs of the GPU default plus its final evaluation, through the real CLI."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CONVREPRO_PROJECT_DIR": tmp, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=krizhevsky2012_imagenette",
                                 f"trainer={device}", f"trainer.max_epochs={epochs}", f"trainer.precision={precision}",
                                 "trainer.enable_progress_bar=false",
                                 f"hydra.run.dir={tmp}/run"], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            return {"error": result.stderr[-2000:]}
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("krizhevsky2012").experiment_id])
        m = run.data.metrics
        return {"precision": precision, "epochs": epochs, "wall_seconds": wall, "pass_seconds": m["time/pass_seconds"],
                "train_images_per_second": m["throughput/train_patterns_per_second"],
                "evaluation_seconds": m.get("time/evaluation_seconds"),
                "checkpoint_seconds": m.get("time/checkpoint_seconds"),
                "final_evaluation_seconds": wall - m["time/total_seconds"],  # start-up included
                "val_10crop_error": m.get("val_10crop/error")}


def learning(overrides: list[str], epochs: int) -> dict:
    """Does a recipe leave chance?  Per pass: running training loss and validation top-1 error
    (ln 10 = 2.303 and 90 % are chance on 10 classes)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CONVREPRO_PROJECT_DIR": tmp, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        result = subprocess.run([sys.executable, "-m", "convrepro.train", "experiment=krizhevsky2012_imagenette",
                                 "trainer=gpu", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                                 f"hydra.run.dir={tmp}/run", *overrides], cwd=REPO, env=env, capture_output=True,
                                text=True)
        if result.returncode != 0:
            return {"overrides": overrides, "error": result.stderr[-2000:]}
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("krizhevsky2012").experiment_id])
        history = {key: [round(m.value, 3) for m in client.get_metric_history(run.info.run_id, key)]
                   for key in ("train/running_loss", "val/error")}
        return {"overrides": overrides, **history, "val_10crop_error": run.data.metrics.get("val_10crop/error")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--input-batches", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-model", action="store_true", help="leave out the model and per-layer sections")
    parser.add_argument("--settings", default="fp32,tf32,bf16,fp16", help="arithmetic settings of the model section")
    parser.add_argument("--no-channels-last", action="store_true", help="model section in the contiguous layout only")
    parser.add_argument("--skip-input", action="store_true", help="leave out the input pipeline and end-to-end runs")
    parser.add_argument("--skip-paths", action="store_true",
                        help="leave out the tensor-op path and the pools-only Triton path (the comparisons)")
    parser.add_argument("--out", default=str(RESULTS / "gpu.json"))
    parser.add_argument("--learn-epochs", type=int, default=0,
                        help="also train the GPU default and the paper's exact init this many passes (0: skip)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench-gpu: no CUDA device on this machine; nothing measured (run it where a GPU is)")
        return 0
    device = torch.device("cuda")
    result = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "batch": args.batch,
              "cpu_cores": os.cpu_count(), "machine": machine.cpu(), "model": {}}
    for setting in () if args.skip_model else args.settings.split(","):
        for channels_last in (False,) if args.no_channels_last else (False, True):
            key = setting + ("+channels_last" if channels_last else "")
            r = model_throughput(227, args.batch, args.repeats, device, setting, channels_last)
            result["model"][key] = r
            print(f"{key:22s} train {r['train']['hand_written_images_per_second']:7.0f} / "
                  f"{r['train']['torch_nn_images_per_second']:7.0f} img/s ({r['train']['ratio']:.2f}), eval "
                  f"{r['eval']['hand_written_images_per_second']:7.0f} / {r['eval']['torch_nn_images_per_second']:7.0f}"
                  f" ({r['eval']['ratio']:.2f})  hand-written / torch.nn")
    result["layers_tf32"] = {} if args.skip_model else layer_ratios(args.batch, args.repeats)
    print("per layer, hand-written / PyTorch (fwd+bwd, TF32): "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["layers_tf32"].items()))
    if not (args.skip_model or args.skip_paths):  # the same without the Triton kernels, and with the pools' alone
        os.environ["CONVREPRO_TRITON"] = "0"
        result["layers_tf32_tensor_ops"] = layer_ratios(args.batch, args.repeats)
        print("per layer, tensor-op path (CONVREPRO_TRITON=0): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["layers_tf32_tensor_ops"].items()))
        for switch, name in (("0", "tensor_ops"), ("pool", "triton_pools")):
            os.environ["CONVREPRO_TRITON"] = switch
            for setting in args.settings.split(","):
                r = result["model"][f"{setting}_{name}"] = model_throughput(227, args.batch, args.repeats, device,
                                                                             setting, False)
                print(f"{setting:4s} CONVREPRO_TRITON={switch:5s} train {r['train']['ratio']:.2f}, "
                      f"eval {r['eval']['ratio']:.2f} of torch.nn")
        del os.environ["CONVREPRO_TRITON"]
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    if args.skip_input:
        print(f"written {args.out}")
        return 0
    ensure_store(256)
    from convrepro.data.images.store import ImageStore

    store = ImageStore.open("imagenette2-224", 256)  # a subset where the data had to travel
    result["store_images"] = {split: store.manifest["splits"][split]["count"] for split in ("train", "val")}
    feed = (256, 227, args.batch, args.input_batches)
    result["input"] = {"store": input_throughput(*feed, "store", device),
                       "store_per_image_augmentation": input_throughput(*feed, "store", device, whole_batch=False),
                       "store_8_workers": input_throughput(*feed, "store", device, 8),
                       "jpeg": input_throughput(*feed, "jpeg", device)}
    result["input_stages"] = feed_stages(device, (4, 8))
    for key, r in result["input_stages"].items():
        print(f"store feed by stage, {key}: " + ", ".join(f"{k} {v:.0f}" for k, v in r.items()) + " img/s")
    print("input pipeline to the GPU: " + ", ".join(f"{s} ({r['workers']} workers) {r['images_per_second']:.0f} img/s"
                                                    for s, r in result["input"].items()))
    result["end_to_end"] = [end_to_end(p, args.epochs) for p in ("32-true", "bf16-mixed")]
    for r in result["end_to_end"]:
        print(f"Imagenette end to end through convrepro-train: {r}")
    if args.learn_epochs:
        result["learning"] = [learning(o, args.learn_epochs)
                              for o in ([], ["model.bias_one=1.0", "model.fc_weight_std=null"])]
        for r in result["learning"]:
            print(f"learning check {r}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
