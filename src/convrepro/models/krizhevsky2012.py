"""Krizhevsky, Sutskever & Hinton 2012: AlexNet (papers/krizhevsky2012.md).

    conv1 96@11x11/4 -> ReLU -> LRN -> max 3/2
    conv2 256@5x5 (groups 2) -> ReLU -> LRN -> max 3/2
    conv3 384@3x3 -> ReLU,  conv4 384@3x3 (groups 2) -> ReLU,  conv5 256@3x3 (groups 2) -> ReLU -> max 3/2
    fc6 4096 -> ReLU -> dropout 0.5,  fc7 4096 -> ReLU -> dropout 0.5,  fc8 classes

The two-GPU split is ``groups=2`` in conv2, conv4 and conv5: each half of the kernels sees
only the maps computed on its own GPU.  ``layers="torch"`` builds the identical network
from ``torch.nn`` layers: the reference the benchmark and the tests compare against.

Input size: the paper says 224, but an 11x11 window at stride 4 gives (224-11)/4+1 = 54.25
positions; its stated 55x55x96 needs 227 without padding or 224 with padding 2.  Both are
config (``input_size``, ``conv1_padding``); the faithful default is 227 with no padding, the
size Caffe's reference model used.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from convrepro import nn as cnn
from convrepro.nn.functional import output_size

from . import activations

LAYERS = ("convrepro", "torch")
INITS = ("paper", "he")


def _conv(layers, cin, cout, k, stride=1, padding=0, groups=1):
    if layers == "torch":
        return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups)
    return cnn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups)


def _pool(layers, k, s):
    return nn.MaxPool2d(k, s) if layers == "torch" else cnn.MaxPool2d(k, s)


class TorchLocalResponseNorm(nn.Module):
    """The twin's LRN: ``torch.nn.LocalResponseNorm``'s function from plain torch ops.

    PyTorch's own module sums the window with ``avg_pool3d``, whose CUDA backward has no
    deterministic implementation: the twin stopped at once in the project's default
    deterministic mode on a GPU.  Shifted slices and adds are deterministic everywhere.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        padded = nn.functional.pad(x * x, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window = sum(padded[:, o:o + c] for o in range(self.size))
        return x / (self.k + self.alpha * window) ** self.beta


def _lrn(layers, size=5, alpha=1e-4, beta=0.75, k=2.0):
    if layers == "torch":
        return TorchLocalResponseNorm(size, alpha, beta, k)
    return cnn.LocalResponseNorm(size, alpha, beta, k)


class AlexNet(nn.Module):
    """The paper's network with switches for its ablations.

    ``lrn``: local response normalisation after conv1 and conv2 (the paper: -1.4 % top-1).
    ``pool_kernel``/``pool_stride``: 3/2 overlapping (the paper) or 2/2 (-0.4 % top-1).
    ``groups``: 2 (two GPUs) or 1 (one GPU, all maps connected).
    ``width``: multiplies every layer's kernel count ("one GPU with half the kernels": 0.5).
    ``nonlinearity``: ``relu`` (the paper) or ``tanh`` (its Figure 1 comparison).
    ``init``: ``paper`` (weights N(0, weight_std^2) -- fc6/fc7 N(0, fc_weight_std^2) when
    given, as Caffe's reference model -- biases ``bias_one`` in conv2/4/5 and fc6/7, 0
    elsewhere) or ``he`` (Kaiming normal for ReLU, biases 0: the CPU variant, which cannot
    afford the paper's hundreds of thousands of steps to get going from N(0, 0.01)).
    """

    def __init__(self, num_classes: int = 1000, input_size: int = 227, conv1_padding: int = 0,
                 groups: int = 2, lrn: bool = True, pool_kernel: int = 3, pool_stride: int = 2,
                 width: float = 1.0, fc_width: int = 4096, dropout: float = 0.5, init: str = "paper",
                 weight_std: float = 0.01, bias_one: float = 1.0, fc_weight_std: float | None = None,
                 layers: str = "convrepro", nonlinearity: str = "relu"):
        super().__init__()
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if groups not in (1, 2):
            raise ValueError(f"groups must be 1 (one GPU) or 2 (the paper's two GPUs), got {groups}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c1, c2, c3, c4, c5 = (_even(width * c) for c in (96, 256, 384, 384, 256))
        self.input_size, self.layers = input_size, layers
        self.init, self.weight_std, self.bias_one = init, weight_std, bias_one
        self.fc_weight_std = weight_std if fc_weight_std is None else fc_weight_std

        # The spatial size after each stage: checked here so that a too-small input fails
        # with the layer it does not fit instead of a shape error deep in the forward pass.
        sizes = {"input": input_size}
        s = output_size(input_size, 11, 4, conv1_padding)
        sizes["conv1"] = s
        for name, op in (("pool1", (pool_kernel, pool_stride, 0)), ("conv2", (5, 1, 2)),
                         ("pool2", (pool_kernel, pool_stride, 0)), ("conv3", (3, 1, 1)),
                         ("conv4", (3, 1, 1)), ("conv5", (3, 1, 1)), ("pool5", (pool_kernel, pool_stride, 0))):
            s = output_size(s, *op)
            if s < 1:
                raise ValueError(f"input_size={input_size} is too small: nothing is left after {name}")
            sizes[name] = s

        self.conv1 = _conv(layers, 3, c1, 11, stride=4, padding=conv1_padding)
        self.norm1 = _lrn(layers) if lrn else nn.Identity()
        self.pool1 = _pool(layers, pool_kernel, pool_stride)
        self.conv2 = _conv(layers, c1, c2, 5, padding=2, groups=groups)
        self.norm2 = _lrn(layers) if lrn else nn.Identity()
        self.pool2 = _pool(layers, pool_kernel, pool_stride)
        self.conv3 = _conv(layers, c2, c3, 3, padding=1)
        self.conv4 = _conv(layers, c3, c4, 3, padding=1, groups=groups)
        self.conv5 = _conv(layers, c4, c5, 3, padding=1, groups=groups)
        self.pool5 = _pool(layers, pool_kernel, pool_stride)
        self.fc6 = nn.Linear(c5 * sizes["pool5"] ** 2, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.dropout = nn.Dropout(dropout)
        # Not in place: the hand-written convolution returns a view of its GEMM output.
        # ReLU is the paper's; tanh is its Figure 1 comparison (25 % training error six times later).
        self.activation = activations.nonlinearity(nonlinearity)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, layer in self.named_children():
            if not hasattr(layer, "weight") or not name.startswith(("conv", "fc")):
                continue
            if self.init == "paper":
                std = self.fc_weight_std if name in ("fc6", "fc7") else self.weight_std
                nn.init.normal_(layer.weight, 0.0, std)
                nn.init.constant_(layer.bias, self.bias_one if name in ones else 0.0)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu" if name != "fc8" else "linear")
                nn.init.zeros_(layer.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.norm1(self.activation(self.conv1(x))))
        x = self.pool2(self.norm2(self.activation(self.conv2(x))))
        x = self.activation(self.conv3(x))
        x = self.activation(self.conv4(x))
        return self.pool5(self.activation(self.conv5(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"AlexNet was built for {self.input_size}x{self.input_size} inputs, "
                             f"got {tuple(x.shape[-2:])}: set model.input_size to the crop size")
        x = torch.flatten(self.features(x), 1)
        x = self.dropout(self.activation(self.fc6(x)))
        x = self.dropout(self.activation(self.fc7(x)))
        return self.fc8(x)

    def first_layer_kernels(self) -> torch.Tensor:
        """conv1's 96 RGB kernels (the paper's figure 3)."""
        return self.conv1.weight.detach()

    def free_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _even(value: float) -> int:
    """Kernel counts stay even so that both "GPUs" get the same number of maps."""
    return max(2, 2 * math.ceil(value / 2))


def swap_kernel_convention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of one twin for the other: the hand-written layers convolve (the lecture's
    definition: the kernel is flipped), ``torch.nn.Conv2d`` correlates; the same network is
    the same function when every conv kernel is mirrored in both spatial axes."""
    return {k: v.flip(-1, -2) if k.startswith("conv") and k.endswith("weight") else v for k, v in state.items()}
