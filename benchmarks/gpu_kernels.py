"""The Triton kernels on a GPU: how exact, and which tile sizes (``make bench-gpu`` runs it).

* exactness: every AlexNet layer at its real shape (batch 16), output and gradients, against
  a float64 reference, at strict fp32, TF32 and bf16 autocast -- beside PyTorch's own layer
  (cuDNN) at the same setting, so the error of the hand-written kernels reads against the
  error the library makes with the same arithmetic;
* the weight gradient of every convolution by Triton's implicit product and by columns + GEMM;
* with ``--parts``, each convolution's forward, input gradient and weight gradient alone against
  cuDNN's, and each max pool's forward and backward against PyTorch's;
* with ``--tiles``, tile sizes: each convolution kernel (forward, input gradient, weight gradient) timed with
  a few candidate ``_triton_conv.CONFIGS`` on AlexNet's conv2, conv3 and conv1's weight gradient at batch 128, at TF32
  and bf16 (medians of CUDA-event timings, ``triton.testing.do_bench``).

Without CUDA it says so in one line and exits 0.  Writes ``results/gpu_kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from convrepro.nn import functional as cf

RESULTS = Path(__file__).resolve().parent / "results"
# name: (input channels, size, maps, kernel, stride, padding, groups) at 227 px
CONVS = {"conv1": (3, 227, 96, 11, 4, 0, 1), "conv2": (96, 27, 256, 5, 1, 2, 2), "conv3": (256, 13, 384, 3, 1, 1, 1),
         "conv4": (384, 13, 384, 3, 1, 1, 2), "conv5": (384, 13, 256, 3, 1, 1, 2)}
POOLS = {"pool1": (96, 55), "pool2": (256, 27), "pool5": (256, 13)}
SETTINGS = ("fp32", "tf32", "bf16")
CANDIDATES = {
    "forward": [dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
                dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3),
                dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)],
    "weight_gradient": [dict(BLOCK_D=64, BLOCK_K=64, BLOCK_M=64, num_warps=4, num_stages=3),
                        dict(BLOCK_D=128, BLOCK_K=64, BLOCK_M=64, num_warps=8, num_stages=3),
                        dict(BLOCK_D=64, BLOCK_K=64, BLOCK_M=128, num_warps=4, num_stages=3)],
}
CANDIDATES["input_gradient"] = CANDIDATES["forward"]


def _setting(name: str):
    torch.backends.cudnn.allow_tf32 = name != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = name != "fp32"
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=name == "bf16")


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    a = a.double().cpu()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - ref).norm() / ref.norm())


def _layer(name: str):
    """(input shape, hand-written fn, PyTorch fn, parameters) of one AlexNet layer."""
    g = torch.Generator().manual_seed(0)
    if name in CONVS:
        c, size, d, k, s, p, groups = CONVS[name]
        w = torch.randn(d, c // groups, k, k, generator=g) / (c // groups * k * k) ** 0.5
        b = torch.randn(d, generator=g)
        return ((c, size), lambda x, w, b: cf.conv2d(x, w, b, stride=s, padding=p, groups=groups),
                lambda x, w, b: F.conv2d(x, w.flip(-2, -1), b, stride=s, padding=p, groups=groups), [w, b])
    if name in POOLS:
        c, size = POOLS[name]
        return (c, size), lambda x: cf.max_pool2d(x, 3, 2), lambda x: F.max_pool2d(x, 3, 2), []
    raise KeyError(name)


def exactness(batch: int) -> dict:
    """‖result - float64‖ / ‖float64‖ for output and gradients: hand-written and PyTorch's."""
    out = {}
    for name in (*CONVS, *POOLS):
        (c, size), ours, ref, params = _layer(name)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, c, size, size, generator=g)
        if name in POOLS:  # what a pool reads: a convolution's channels-last, rectified output
            x = x.relu()
        leaves64 = [t.double().requires_grad_() for t in (x, *params)]
        y64 = ref(*leaves64)
        grad = torch.randn(y64.shape, generator=g, dtype=torch.float64)
        grads64 = torch.autograd.grad(y64, leaves64, grad)
        out[name] = {}
        for setting in SETTINGS:
            row = {}
            for who, fn in (("hand_written", ours), ("pytorch", ref)):
                leaves = [t.cuda().requires_grad_() for t in (x, *params)]
                leaves[0] = leaves[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
                with _setting(setting):
                    y = fn(*leaves)
                grads = torch.autograd.grad(y, leaves, grad.to(y.dtype).cuda())
                row[who] = {"output": _relative(y, y64), **{f"grad_{i}": _relative(gr, r64) for i, (gr, r64)
                                                               in enumerate(zip(grads, grads64, strict=True))}}
            out[name][setting] = row
            worst = max(row["hand_written"].values())
            print(f"exactness {name:6s} {setting:5s}: hand-written worst {worst:.1e} "
                  f"(PyTorch's own {max(row['pytorch'].values()):.1e})")
    return out


def _bench(fn) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def _runs(ours, x, w, b, gy) -> dict:
    """The forward alone, and with one of the two gradients (the other leaf needs none)."""
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    return {"forward": lambda: ours(x, w, b),
            "input_gradient": lambda: torch.autograd.grad(ours(xg, w, b), xg, gy),
            "weight_gradient": lambda: torch.autograd.grad(ours(x, wg, b), wg, gy)}


def _on_gpu(name: str, batch: int):
    """(setting, input, weight, bias) of convolution ``name`` at TF32 and in bf16: a channels-last
    input as the network passes it, the arithmetic switched to the setting."""
    (c, size), _, _, (w, b) = _layer(name)
    for setting in ("tf32", "bf16"):
        dtype = torch.bfloat16 if setting == "bf16" else torch.float32
        _setting(setting)
        x = torch.randn(batch, c, size, size, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        yield setting, x, w.cuda().to(dtype), b.cuda().to(dtype)


def tile_sizes(batch: int, layers=("conv2", "conv3", "conv1"), kernels=tuple(CANDIDATES)) -> dict:
    from convrepro.nn.functional import _triton_conv

    default = {k: dict(v) for k, v in _triton_conv.CONFIGS.items()}
    out = {}
    for name in layers:
        ours = _layer(name)[1]
        for setting, x, wd, bd in _on_gpu(name, batch):
            y = ours(x, wd, bd)
            gy = torch.randn_like(y)
            runs = _runs(ours, x, wd, bd, gy)
            for kernel, candidates in CANDIDATES.items():
                if kernel not in kernels or name == "conv1" and kernel != "weight_gradient":
                    continue  # the image needs no gradient; its forward is conv2's kind of product
                times = []
                for config in candidates:
                    _triton_conv.CONFIGS.update({k: dict(v) for k, v in default.items()})
                    _triton_conv.CONFIGS[kernel] = config
                    try:
                        t = _bench(runs[kernel])
                        if kernel != "forward":
                            _triton_conv.CONFIGS.update({k: dict(v) for k, v in default.items()})
                            t -= _bench(runs["forward"])  # the gradient alone
                    except Exception as error:  # a tile that does not fit (shared memory)
                        t = None
                        print(f"  {name} {setting} {kernel} {config}: {type(error).__name__}: {str(error)[:120]}")
                    times.append(t)
                out.setdefault(name, {}).setdefault(setting, {})[kernel] = times
                shown = ", ".join("-" if t is None else f"{t:.3f}" for t in times)
                print(f"tiles {name} {setting} {kernel:15s} ms per candidate: {shown}")
    _triton_conv.CONFIGS.update(default)
    return {"candidates": CANDIDATES, "ms": out}


def weight_gradient_paths(batch: int, layers=tuple(CONVS)) -> dict:
    """Milliseconds of each layer's weight gradient alone: Triton's implicit product against the
    columns and one GEMM (``_triton_conv.WEIGHT_GRADIENT``), TF32 and bf16."""
    from convrepro.nn.functional import _triton_conv

    default, out = _triton_conv.WEIGHT_GRADIENT, {}
    for name in layers:
        ours = _layer(name)[1]
        for setting, x, wd, bd in _on_gpu(name, batch):
            runs = _runs(ours, x, wd, bd, torch.randn_like(ours(x, wd, bd)))
            row = {}
            for path in ("triton", "columns"):
                _triton_conv.WEIGHT_GRADIENT = path
                row[path] = _bench(runs["weight_gradient"]) - _bench(runs["forward"])
            _triton_conv.WEIGHT_GRADIENT = default
            out.setdefault(name, {})[setting] = row
            print(f"weight gradient {name} {setting}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in row.items()))
    return out


def parts(batch: int, layers=("conv2", "conv3", "conv4", "conv5")) -> dict:
    """Milliseconds of each convolution's forward, input gradient and weight gradient, each kernel
    called alone (no autograd around it), hand-written and cuDNN's (``torch.nn.grad``), TF32 and
    bf16 -- which part leaves the layer's ratio -- with the input gradient also from the kernel
    stored maps-last (its layout before ``_output_maps_last``) and the weight gradient by both
    paths; and each max pool's forward and
    backward on the device (profiler) and the host's time per forward + backward call, against
    PyTorch's."""
    out = {}
    for name in layers:
        *_, s, p, groups = CONVS[name]
        for setting, x, wd, bd in _on_gpu(name, batch):
            row = _conv_parts(x, wd, bd, s, p, groups, "tf32" if setting == "tf32" else "ieee")
            out.setdefault(name, {})[setting] = row
            print(f"parts {name} {setting}: " + ", ".join(
                f"{k} {row['hand_written'][k]:.3f}/{row['cudnn'][k]:.3f}" for k in row["cudnn"])
                + f" ms (hand-written/cuDNN); input gradient maps-last {row['input_gradient_maps_last']:.3f}, "
                f"weight gradient by Triton {row['hand_written']['weight_gradient_triton']:.3f} ms")
    _setting("tf32")
    for name in POOLS:
        (c, size), ours, ref, _ = _layer(name)
        x = torch.randn(batch, c, size, size, device="cuda").relu().contiguous(memory_format=torch.channels_last)
        out[name] = {who: _pool_times(fn, x) for who, fn in (("hand_written", ours), ("pytorch", ref))}
        print(f"parts {name}: " + ", ".join(f"{k} {out[name]['hand_written'][k]:.3f}/{out[name]['pytorch'][k]:.3f}"
                                             for k in out[name]["pytorch"]) + " ms (hand-written/PyTorch)")
    return out


def _conv_parts(x, wd, bd, s, p, groups, precision) -> dict:
    from convrepro.nn.functional import _triton_conv as tc

    gy = torch.randn_like(tc._forward_of(x, wd, bd, (s, s), (p, p), 0.0, groups))
    hand = {"forward": lambda: tc._forward_of(x, wd, bd, (s, s), (p, p), 0.0, groups),
            "input_gradient": lambda: tc._input_gradient_of(gy, wd, x.shape, (p, p), groups, precision),
            "weight_gradient": lambda: tc._weight_gradient_by_columns(gy, x, wd.shape, (s, s), (p, p), 0.0, groups),
            "weight_gradient_triton": lambda: tc._weight_gradient_of(gy, x, wd.shape, (s, s), (p, p), 0.0, groups,
                                                                     precision)}
    cudnn = {"forward": lambda: F.conv2d(x, wd, bd, s, p, 1, groups),
             "input_gradient": lambda: torch.nn.grad.conv2d_input(x.shape, wd, gy, s, p, 1, groups),
             "weight_gradient": lambda: torch.nn.grad.conv2d_weight(x, wd.shape, gy, s, p, 1, groups)}
    row = {"hand_written": {k: _bench(f) for k, f in hand.items()}, "cudnn": {k: _bench(f) for k, f in cudnn.items()}}
    current, tc._output_maps_last = tc._output_maps_last, tc._maps_last
    try:
        row["input_gradient_maps_last"] = _bench(hand["input_gradient"])
    finally:
        tc._output_maps_last = current
    return row


def _pool_times(fn, x, calls: int = 50) -> dict:
    """Device milliseconds per forward and per backward (profiler: every kernel the calls ran,
    fills included), and host milliseconds per forward + backward call."""
    xg = x.clone().requires_grad_()
    gy = torch.randn_like(fn(xg))
    for _ in range(5):
        torch.autograd.grad(fn(xg), xg, gy)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        torch.autograd.grad(fn(xg), xg, gy)
    host = (time.perf_counter() - start) / calls * 1e3
    torch.cuda.synchronize()
    forward = _device_ms(lambda: fn(x), calls)
    return {"forward": forward, "backward": _device_ms(lambda: torch.autograd.grad(fn(xg), xg, gy), calls) - forward,
            "host_per_call": host}


def _device_ms(run, calls: int) -> float:
    """Milliseconds of device time per call: the sum of the kernels the profiler saw, over ``calls``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    events = prof.key_averages()
    return sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") / calls / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--exact-batch", type=int, default=16)
    parser.add_argument("--skip-exactness", action="store_true")
    parser.add_argument("--tiles", nargs="?", const=",".join(CANDIDATES), default="",
                        help="also time the candidate tile sizes (of these kernels, comma-separated: all if none)")
    parser.add_argument("--skip-weight-gradient", action="store_true", help="leave out the weight-gradient paths")
    parser.add_argument("--parts", action="store_true", help="also time each layer's forward and gradients alone")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_kernels: no CUDA device on this machine; nothing measured (run it where a GPU is)")
        return 0
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    sections = [] if args.skip_exactness else [("exactness", lambda: exactness(args.exact_batch))]
    if not args.skip_weight_gradient:
        sections.append(("weight_gradient_ms", lambda: weight_gradient_paths(args.batch)))
    if args.parts:
        sections.append(("parts", lambda: parts(args.batch)))
    if args.tiles:
        sections.append(("tiles", lambda: tile_sizes(args.batch, kernels=args.tiles.split(","))))
    failed = False
    for key, section in sections:
        try:
            result[key] = section()
        except Exception:  # keep the other sections' numbers
            failed = True
            result[key] = {"error": traceback.format_exc()[-3000:]}
            print(result[key]["error"], file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_kernels.json").write_text(json.dumps(result, indent=1))
    print(f"written {RESULTS / 'gpu_kernels.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
