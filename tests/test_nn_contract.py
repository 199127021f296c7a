"""The contract of convrepro.nn: no PyTorch conv/pool/LRN inside, clear errors, any device and dtype."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import convrepro.nn
from convrepro import nn as cnn
from convrepro.nn import functional as cf

NN_DIR = Path(convrepro.nn.__file__).parent
FORBIDDEN = re.compile(
    r"torch\.nn\.functional\.(conv|conv_transpose|max_pool|avg_pool|adaptive|local_response|"
    r"lp_pool|fractional_max_pool)"
    r"|\bF\.(conv\d|conv_transpose|max_pool|avg_pool|adaptive_|local_response_norm|lp_pool)"
    r"|torch\.nn\.grad|torch\._?(conv\d|conv_transpose|convolution|max_pool|avg_pool|mkldnn_conv)"
    r"|\bnn\.(Conv\d|ConvTranspose|MaxPool|AvgPool|AdaptiveMaxPool|AdaptiveAvgPool|LocalResponseNorm|LPPool)"
    r"|\baten\.(convolution|conv|max_pool|avg_pool)"
)


def test_nn_sources_call_no_pytorch_convolution_pooling_or_lrn():
    sources = sorted(NN_DIR.rglob("*.py"))
    assert len(sources) >= 6
    offences = [
        f"{path.relative_to(NN_DIR)}:{lineno}: {line.strip()}"
        for path in sources
        for lineno, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert offences == []


# What PyTorch's own kernels are called when they run (operator names with their
# namespace): nothing of cuDNN's, MIOpen's or oneDNN's (``mkldnn::``).
FORBIDDEN_OPS = re.compile(r"conv|pool|local_response|cudnn|miopen|mkldnn")


class _Ops(TorchDispatchMode):
    """Every ATen operator that runs inside the block, forward and backward."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


def kernels_run_by(fn, *shapes, dtype=torch.float32) -> set[str]:
    """The ATen operators one forward and backward of ``fn`` runs."""
    inputs = [torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes]
    with _Ops() as ops:
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return ops.names


def path_of(out: torch.Tensor) -> str:
    """Which implementation a layer's pair took ("small", "large", "triton", "tensor ops"):
    the first thing its forward saved, kept on the autograd node."""
    return out.grad_fn.kept[0]


def _through(path: str, out: torch.Tensor) -> torch.Tensor:
    assert type(out.grad_fn).__name__ == path
    return out


PATHS = {
    "time-delay (1-D, one token)": (lambda x, w: cf.conv1d(x, w), (1, 16, 15), (8, 16, 3)),
    "small 2-D (LeCun H2)": (lambda x, w: cf.conv2d(x, w, stride=2, padding=2, pad_value=-1.0), (4, 12, 8, 8),
                             (12, 12, 5, 5)),
    "large 2-D (grouped)": (lambda x, w: cf.conv2d(x, w, padding=2, groups=2), (4, 16, 32, 32), (16, 8, 5, 5)),
    "max pooling": (lambda x: cf.max_pool2d(x, 3, 2), (2, 3, 9, 9)),
    "max pooling, channels-last": (lambda x: _through("MaxPooling2dBackward", cf.max_pool2d(
        x.contiguous(memory_format=torch.channels_last), 3, 2)), (2, 3, 9, 9)),
    "temporal integration": (lambda x: cf.temporal_integration(x, "max"), (2, 3, 9)),
    "average pooling": (lambda x: cf.avg_pool2d(x, 3, 2), (2, 3, 9, 9)),
    "decimation": (lambda x: cf.decimation_pool2d(x, 2), (2, 3, 8, 8)),
    "LRN": (lambda x: cf.local_response_norm(x, 5), (2, 8, 5, 5)),
}


@pytest.mark.parametrize("path", PATHS)
def test_no_pytorch_convolution_pooling_or_lrn_kernel_runs_on_any_path(path):
    fn, *shapes = PATHS[path]
    names = kernels_run_by(fn, *shapes)
    assert names and not {n for n in names if FORBIDDEN_OPS.search(n)}, sorted(names)


def test_the_operator_check_sees_pytorchs_own():
    import torch.nn.functional as F

    assert "aten::convolution" in kernels_run_by(lambda x, w: F.conv2d(x, w), (1, 2, 6, 6), (3, 2, 3, 3))
    assert {n for n in kernels_run_by(lambda x: F.max_pool2d(x, 2), (1, 2, 6, 6)) if FORBIDDEN_OPS.search(n)}


def test_forbidden_pattern_catches_the_references():
    for line in ("y = F.conv2d(x, w)", "torch.nn.functional.max_pool2d(x, 2)",
                 "torch.conv1d(x, w)", "nn.Conv2d(1, 2, 3)", "torch.nn.grad.conv2d_input(...)",
                 "F.local_response_norm(x, 5)", "torch.nn.functional.avg_pool1d(x, 3)"):
        assert FORBIDDEN.search(line), line


@pytest.mark.parametrize("call,message", [
    (lambda: cf.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 5, 5)), r"kernel \(5, 5\) is larger than the padded input \(4, 4\)"),
    (lambda: cf.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 1, 3, 3), groups=2), r"groups=2 must divide.*input channels \(3\)"),
    (lambda: cf.conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 3, 3, 3), groups=2), r"weight \(4, 3, 3, 3\) expects 6 input channels"),
    (lambda: cf.conv2d(torch.randn(1, 1, 8, 8), torch.randn(2, 1, 3, 3), stride=0), r"stride must be positive, got \(0, 0\)"),
    (lambda: cf.conv2d(torch.randn(1, 1, 8, 8), torch.randn(2, 1, 3, 3), padding=-1), r"padding must be non-negative"),
    (lambda: cf.conv2d(torch.randn(1, 8, 8), torch.randn(2, 1, 3, 3)), r"input must have rank 4 \(N, C, H, W\), got shape \(1, 8, 8\)"),
    (lambda: cf.conv2d(torch.randn(1, 1, 8, 8), torch.randn(2, 1, 3, 3), torch.randn(3)), r"bias must be one per output map \(2,\) or one per output unit \(2, 6, 6\), got \(3,\)"),
    (lambda: cf.conv1d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3)), r"input must have rank 3"),
    # the time-delay path's one-line test falls back to these, named in 1-D shapes
    (lambda: cf.conv1d(torch.randn(1, 16, 15), torch.randn(8, 16, 3), torch.randn(8, 12)), r"one per output unit \(8, 13\), got \(8, 12\)"),
    (lambda: cf.conv1d(torch.randn(1, 16, 15), torch.randn(8, 15, 3)), r"weight \(8, 15, 3\) expects 15 input channels"),
    (lambda: cf.conv1d(torch.randn(1, 16, 2), torch.randn(8, 16, 3)), r"kernel \(3,\) is larger than the padded input \(2,\)"),
    (lambda: cf.conv1d(torch.randn(1, 16, 9), torch.randn(8, 16, 3), stride=0), r"stride must be positive, got \(0,\)"),
    (lambda: cf.max_pool2d(torch.randn(1, 1, 2, 2), 3), r"max pooling window \(3, 3\) is larger than the input \(2, 2\)"),
    (lambda: cf.avg_pool2d(torch.randn(1, 1, 6, 6), 2, 0), r"stride must be positive"),
    (lambda: cf.decimation_pool2d(torch.randn(1, 1, 6, 6), 0), r"factor must be positive"),
    (lambda: cf.local_response_norm(torch.randn(3, 4), 5), r"rank >= 3"),
    (lambda: cnn.Conv2d(3, 4, 3, connection_table=torch.ones(3, 4, dtype=torch.bool)), r"connection_table must have shape \(out_channels, in_channels\) = \(4, 3\), got \(3, 4\)"),
    (lambda: cnn.Conv2d(3, 2, 3, connection_table=torch.tensor([[1, 0, 1], [0, 0, 0]])), r"output map\(s\) \[1\] see no input map"),
    (lambda: cnn.Conv2d(3, 2, 3, bias="unit"), r"needs input_size"),
    (lambda: cnn.Conv2d(3, 2, 3, bias="per-unit"), r"bias must be one of"),
    (lambda: cnn.Conv2d(3, 4, 3, groups=2), r"groups=2 must divide both in_channels \(3\)"),
    (lambda: cnn.TemporalIntegration("median"), r"mode must be one of"),
])
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 7])
def test_layers_keep_dtype_and_batch(dtype, batch):
    x = torch.randn(batch, 4, 12, 12, dtype=dtype, requires_grad=True)
    layers = torch.nn.Sequential(
        cnn.Conv2d(4, 6, 3, padding=1, groups=2), cnn.LocalResponseNorm(),
        cnn.MaxPool2d(3, 2), cnn.AvgPool2d(2), cnn.DecimationPool2d(1),
    ).to(dtype)
    out = layers(x)
    assert out.dtype == dtype and out.shape == (batch, 6, 2, 2)
    out.sum().backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_layers_on_cuda_match_cpu():
    x = torch.randn(3, 4, 12, 12, dtype=torch.float64)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    cpu = cf.max_pool2d(cf.local_response_norm(cf.conv2d(x, w, padding=1, groups=2)), 3, 2)
    gpu = cf.max_pool2d(cf.local_response_norm(cf.conv2d(x.cuda(), w.cuda(), padding=1, groups=2)), 3, 2)
    torch.testing.assert_close(gpu.cpu(), cpu)
