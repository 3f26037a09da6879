"""The argmax format of max pyramid pooling, and the two things done with it.

Image SPP (``tinyspp.ops.spp``) and region SPP (``tinyspp.ops.roi``) record each maximum the
same way: ``argmax[u, j]`` is the flat index ``h*W + w`` of output column ``j``'s maximum inside
its (H, W) plane, in the output's column layout (levels in order, each level channel-major), any
integer dtype wide enough for ``H*W - 1``. Row ``u`` is an image (image SPP) or a distinct RoI
(region SPP, with ``rowmap`` naming the row of every output and ``images`` the image of every
row). From it:

* :func:`gather_max` reads the values (the forward's output), and
* :func:`scatter_max_grad` adds ``dout`` at the maxima (the backward), in one scatter-add.

Both build the flat index into the whole ``(N, C, H, W)`` array, ``(image*C + c)*H*W + argmax``,
in chunks of rows on the CPU, so no index of the output's full size is ever allocated (for 2000
RoIs of a 256-channel map that would be a 200 MB int64 temporary).

Examples
--------
>>> import numpy as np
>>> argmax = np.array([[1, 2]])              # one image, 2 channels, one bin: cells 1 and 2
>>> scatter_max_grad(np.array([[1.0, 5.0]]), argmax, np.array([0, 1]), (1, 2, 2, 2))[0]
array([[[0., 1.],
        [0., 0.]],
<BLANKLINE>
       [[0., 0.],
        [5., 0.]]])
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, scatter_add

CHUNK = 2**20  # flat-index elements built at a time on the CPU (8 MB of int64)


def _flat_chunks(argmax, chan, shape, R, images=None, rowmap=None):
    """Yield ``(start, stop, flat)``: the int64 flat indices into ``(N, C, H, W)`` of output
    rows ``start:stop`` (``flat`` a reused buffer on the CPU; all rows at once on the GPU)."""
    xp = get_array_module(argmax)
    N, C, H, W = shape
    HW = H * W
    D = argmax.shape[1]
    col = xp.asarray(chan).astype(np.int64, copy=False) * HW  # (D,) c*H*W of every column
    rows_image = None  # image of every output row, on the host
    if images is not None:
        rows_image = np.asarray(images, dtype=np.int64)
        if rowmap is not None:
            rows_image = rows_image[rowmap]
    elif rowmap is None:
        rows_image = np.arange(R, dtype=np.int64)  # image SPP: row r is image r
    single = rows_image is not None and R > 0 and bool((rows_image == rows_image[0]).all())
    step = max(1, CHUNK // max(D, 1)) if xp is np else max(R, 1)
    buffer = np.empty((min(step, R), D), dtype=np.int64) if xp is np else None
    for start in range(0, R, step):
        stop = min(R, start + step)
        rows = argmax[start:stop] if rowmap is None else argmax[xp.asarray(rowmap[start:stop])]
        flat = buffer[:stop - start] if buffer is not None else None
        flat = xp.add(col, rows, out=flat, dtype=np.int64)
        if single:
            if rows_image[0]:
                flat += int(rows_image[0]) * C * HW
        else:
            flat += xp.asarray(rows_image[start:stop] * (C * HW))[:, None]
        yield start, stop, flat


def gather_max(x, argmax, chan, R, images=None, rowmap=None, out=None):
    """The values at the maxima: ``out (R, D)``, ``out[r, j] = x[image, c_j].flat[argmax]``.

    ``x (N, C, H, W)``; ``argmax (U, D)`` in the format above; ``chan (D,)`` the channel of each
    column; ``images (U,)`` the image of each argmax row (None: row ``u`` is image ``u``);
    ``rowmap (R,)`` the argmax row of each output row (None: the identity). ``out``: optional
    ``(R, D)`` result in ``x``'s dtype.
    """
    xp = get_array_module(x)
    D = argmax.shape[1]
    out = xp.empty((R, D), dtype=x.dtype) if out is None else out
    flat_x = x.reshape(-1)
    for start, stop, flat in _flat_chunks(argmax, chan, x.shape, R, images, rowmap):
        if xp is np:  # every index is in range: "wrap" skips the bounds check
            np.take(flat_x, flat, out=out[start:stop], mode="wrap")
        else:
            out[start:stop] = xp.take(flat_x, flat)
    return out


def scatter_max_grad(dout, argmax, chan, shape, images=None, rowmap=None):
    """Max backward: ``dx (N, C, H, W)`` with every ``dout (R, D)`` entry added at its maximum.

    ``argmax``, ``chan``, ``images`` and ``rowmap`` as in :func:`gather_max` (image SPP passes
    ``argmax (N, D)`` and nothing else). One scatter-add (``tinyspp.backend.scatter_add``): on
    NumPy ``np.add.at`` with accumulator and weights of one dtype, its fast path (about twice
    as fast as ``bincount``, which converts everything to float64), so float32 gradients
    accumulate in float32, as in the deep-learning frameworks; on CuPy ``cupyx.scatter_add``
    (atomic adds, no host synchronisation). Overlapping bins and identical RoIs accumulate.
    """
    xp = get_array_module(dout)
    N, C, H, W = shape
    R = dout.shape[0]
    dx = xp.zeros(N * C * H * W, dtype=dout.dtype)
    for start, stop, flat in _flat_chunks(argmax, chan, shape, R, images, rowmap):
        scatter_add(dx, flat.ravel(), dout[start:stop].ravel())
    return dx.reshape(N, C, H, W)
