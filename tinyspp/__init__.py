"""tinyspp: SPP-net (He, Zhang, Ren, Sun 2014) from scratch in NumPy and CuPy.

The light core is imported here (``backend``, ``bins``, ``ops``, ``nn``, ``gradcheck``); the
parts that pull in scikit-image / scikit-learn are imported explicitly: ``tinyspp.data``,
``tinyspp.train``, ``tinyspp.detect``, ``tinyspp.kernels``.

>>> import numpy as np, tinyspp
>>> out, cache = tinyspp.spp_forward(np.ones((2, 256, 13, 9)))
>>> out.shape
(2, 12800)
"""

from . import backend, bins, gradcheck, nn, ops
from .backend import asnumpy, get_array_module, gpu_available, to_device
from .bins import bin_edges, coverage, paper_window_stride, spp_output_length
from .ops import roi_spp_backward, roi_spp_forward, spp_backward, spp_forward

__version__ = "0.1.0"

__all__ = [
    "backend", "bins", "gradcheck", "nn", "ops",
    "asnumpy", "get_array_module", "gpu_available", "to_device",
    "bin_edges", "coverage", "paper_window_stride", "spp_output_length",
    "roi_spp_backward", "roi_spp_forward", "spp_backward", "spp_forward",
]
