"""The lecture's layers (convolution forward, correlation backward; pooling) written by hand.

Nothing here calls PyTorch's own convolution, pooling or LRN: those are the references the
tests and benchmarks compare against.  Depends on torch only.
"""

from . import functional
from .conv import Conv1d, Conv2d
from .lrn import LocalResponseNorm
from .pool import (
    AvgPool1d,
    AvgPool2d,
    DecimationPool1d,
    DecimationPool2d,
    MaxPool1d,
    MaxPool2d,
    TemporalIntegration,
)

__all__ = [
    "AvgPool1d", "AvgPool2d", "Conv1d", "Conv2d", "DecimationPool1d", "DecimationPool2d",
    "LocalResponseNorm", "MaxPool1d", "MaxPool2d", "TemporalIntegration", "functional",
]
