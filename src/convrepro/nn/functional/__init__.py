"""The lecture's layers as plain forward/backward pairs, and autograd Functions around them.

Each layer ``<layer>_forward(...) -> (output, saved)`` and
``<layer>_backward(grad_output, saved, needs) -> gradients`` lives in its own file with the
lecture's formulas; ``conv2d``, ``max_pool2d``... run the same pairs under autograd.
"""

from .avg_pool import avg_pool1d, avg_pool2d, avg_pool2d_backward, avg_pool2d_forward
from .conv import conv1d, conv1d_backward, conv1d_forward, conv2d, conv2d_backward, conv2d_forward
from .decimation_pool import decimation_pool1d, decimation_pool2d, decimation_pool2d_backward, decimation_pool2d_forward
from .dense import (
    dense_backward,
    dense_forward,
    logistic_backward,
    logistic_forward,
    scaled_tanh_backward,
    scaled_tanh_forward,
)
from .lrn import local_response_norm, lrn_backward, lrn_forward
from .max_pool import (
    max_pool1d,
    max_pool1d_backward,
    max_pool1d_forward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
)
from .sizes import output_size
from .temporal_integration import temporal_integration, temporal_integration_backward, temporal_integration_forward

