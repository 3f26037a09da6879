"""Hand-written kernels: pyramid pooling (one CUDA source, its CPU emulation, a CPU kernel),
the convolution's im2col / col2im and its direct convolutions on the CPU.

This package face only hands names on. What lives where:

=========================  ===================================================================
``pyramid_pool.cu``        the CUDA kernels: image SPP forward/backward, region SPP
                           forward/backward (max and avg), one thread per output element
``pyramid_pool.py``        their four wrappers (checks, bin tables packed once per geometry),
                           re-exported here: :func:`spp_forward`, :func:`spp_backward`,
                           :func:`roi_spp_forward`, :func:`roi_spp_backward`
``cuda.py``                runs the ``.cu`` on CuPy arrays (``cupy.RawModule``)
``emulate.py``             runs the SAME ``.cu`` on NumPy arrays, compiled as C++ and executed
                           thread by thread (a test harness: about 1000x slower than ``cpu``)
``region_max.cpp``         the compiled CPU kernel of region max pooling (the fast NumPy path)
``cpu.py``                 its glue: plan, bin edges, checks, the ctypes calls
``columns.cpp``            the compiled im2col / col2im of ``tinyspp.ops.conv`` (NumPy path)
``columns.py``             its glue: checks and the ctypes calls (the GIL is released)
``direct.cpp``             the compiled direct convolution of a first layer (few channels,
                           stride 1): forward and weight gradient, no columns
``direct.py``              its glue: the rule's kernel half (``takes``), checks, the calls
``blocked.cpp``            the compiled direct convolution of deeper layers (many channels,
                           stride 1) in a channel-blocked layout: forward, dw and dx
``blocked.py``             its glue: packing to and from the blocks, checks, the calls
``build.py``               compile once per source version, cache safely, load (ctypes)
``common.py``              sources, entry points, launch sizes, the shared argument checks
=========================  ===================================================================

``tinyspp.ops`` picks among them with ``impl`` (see ``tinyspp.ops.roi``): ``"cuda"`` and
``"emulate"`` run ``pyramid_pool.cu``, ``"cpu"`` runs ``region_max.cpp``.

Examples
--------
>>> import numpy as np
>>> from tinyspp.bins import bin_table
>>> x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])          # (1, 1, 2, 2); a tie at 3
>>> out, argmax = spp_forward(x, bin_table(2, 2, (1,)))
>>> out.tolist(), argmax.tolist()                        # first maximum in row-major order
([[3.0]], [[1]])
>>> spp_backward(np.ones((1, 1)), argmax, x.shape, bin_table(2, 2, (1,))).tolist()
[[[[0.0, 1.0], [0.0, 0.0]]]]
>>> rois = np.array([[0, 0, 1, 1, 1]])                  # bottom row: b=0, x0=0, y0=1, x1=1, y1=1
>>> roi_spp_forward(x, rois, (2, 1), "avg")[0].tolist()
[[3.0, 2.0, 3.0, 2.0, 2.5]]
"""

from .common import POOLS, kernel_source, launch_config
from .pyramid_pool import roi_spp_backward, roi_spp_forward, spp_backward, spp_forward

__all__ = [
    "spp_forward", "spp_backward", "roi_spp_forward", "roi_spp_backward",
    "kernel_source", "launch_config", "POOLS",
]
