"""Pure forward/backward functions: ``*_forward(...) -> (out, cache)``, ``*_backward(dout, cache)``.

Every op picks NumPy or CuPy from its inputs (``tinyspp.backend.get_array_module``), validates
its arguments once at the entry and keeps what backward needs in a ``NamedTuple`` cache.

Importing it sets glibc's heap thresholds once (``tinyspp.ops.heap``: freed arrays stay in the
heap for the next step instead of being faulted in again; ``TINYSPP_KEEP_FREED=0`` keeps glibc's
defaults).
"""

from . import heap
from .basic import (
    DropoutCache,
    LinearCache,
    ReLUCache,
    dropout_backward,
    dropout_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from .conv import (
    Conv2dCache,
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
    im2col,
)
from .loss import softmax_cross_entropy
from .pool import MaxPool2dCache, max_pool2d_backward, max_pool2d_forward, pool_output_size
from .roi import RoISPPCache, roi_spp_backward, roi_spp_forward
from .spp import SPPCache, spp_backward, spp_forward

heap.keep_freed_memory()

__all__ = [
    # basic
    "DropoutCache", "LinearCache", "ReLUCache", "dropout_backward", "dropout_forward",
    "linear_backward", "linear_forward", "relu_backward", "relu_forward",
    # conv
    "Conv2dCache", "col2im", "conv2d_backward", "conv2d_forward", "conv2d_forward_naive",
    "conv_output_size", "im2col",
    # loss
    "softmax_cross_entropy",
    # pool
    "MaxPool2dCache", "max_pool2d_backward", "max_pool2d_forward", "pool_output_size",
    # pyramid pooling: image SPP (and region SPP, roi.py)
    "SPPCache", "spp_backward", "spp_forward",
    "RoISPPCache", "roi_spp_backward", "roi_spp_forward",
]
