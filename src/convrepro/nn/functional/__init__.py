"""Functional forms of the lecture's layers: each an autograd Function with written-out backward."""

from ._conv_large import LargeConvolution2d
from ._conv_small import SmallConvolution2d
from .conv import conv1d, conv2d
from .lrn import LocalResponseNormalisation, local_response_norm
from .pool import (
    AveragePooling2d,
    DecimationPooling2d,
    MaxPooling2d,
    avg_pool1d,
    avg_pool2d,
    decimation_pool1d,
    decimation_pool2d,
    max_pool1d,
    max_pool2d,
)
from .sizes import output_size

__all__ = [
    "AveragePooling2d", "LargeConvolution2d", "SmallConvolution2d", "DecimationPooling2d", "LocalResponseNormalisation",
    "MaxPooling2d", "avg_pool1d", "avg_pool2d", "conv1d", "conv2d", "decimation_pool1d",
    "decimation_pool2d", "local_response_norm", "max_pool1d", "max_pool2d", "output_size",
]
