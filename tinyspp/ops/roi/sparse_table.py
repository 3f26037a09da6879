"""Region max pooling with array operations only (``impl="xp"``, NumPy or CuPy).

How two thousand regions are pooled without a Python loop over them (steps 1 and 2 live in
``tinyspp.ops.rectmax``):

1. Keys. Every cell gets an integer key ``rank << bits | (2**bits - 1 - h*W - w)`` where ``rank``
   is the dense rank of its value within its (image, channel) plane (NaN ranks highest). The
   largest key of a rectangle is its maximum, ties going to the smallest flat index, i.e. the first
   maximum in row-major order, and NaN is sticky: exactly the SPP rule, as one integer ``max``.
2. Sparse table. ``T[a, b][y, x]`` is the max key of the ``2**a x 2**b`` block at ``(y, x)``, built
   on demand by doubling, laid out channel-last ``(N, H', W', C)``. Any bin of height ``h`` and
   width ``w`` is covered by four (possibly overlapping) blocks with ``2**a <= h < 2**(a+1)``: its
   max key is the max of four look-ups, each moving one contiguous ``C``-vector. Overlap is
   harmless: the keys already carry the tie rule.
3. Nesting (``tinyspp.bins.level_plan``). With adaptive bins, bin ``i`` of level ``n`` is exactly
   the union of bins ``i*m/n .. (i+1)*m/n - 1`` of level ``m`` when ``n`` divides ``m``; so of
   (6, 3, 2, 1) only level 6 needs look-ups, the coarser levels take the max of their sub-bins'
   keys.
4. Decode. The low bits of the winning key are ``2**bits - 1 - (h*W + w)``: one subtraction gives
   the argmax in the region-pooling format (``tinyspp.ops.argmax``; uint16 for maps of up to
   65536 cells, uint32 above). The values are read from ``features`` at the argmax
   (``gather_max``), so they are bitwise the elements ``spp_forward`` returns.

Memory: the keys of every bin, ``(U, n*n, C)`` per level, are exactly as many words as the output
when the key and value widths agree (float32 with uint32 keys): they live in ``out`` until the
values overwrite them, and the window tables are built in the argmax buffer before it is decoded
into. Fresh buffers of a few hundred MB cost page faults on every call, so this saves a sizeable
part of the run time.
"""

from __future__ import annotations

import numpy as np

from ...backend import get_array_module
from ...bins import level_plan
from ..argmax import gather_max
from ..rectmax import key_dtypes, plane_keys, window_max
from ..spp import channel_of_column
from .rows import level_bins


def max_forward(features, rois, inverse, levels, mode):
    """Max pooling of the distinct ``rois (U, 5)``; output row ``r`` is RoI ``inverse[r]``
    (``None``: the rows are ``rois`` themselves). Returns ``out (R, D)`` and ``argmax (U, D)``
    in the region-pooling argmax format."""
    xp = get_array_module(features)
    N, C, H, W = features.shape
    HW = H * W
    U, R = len(rois), len(rois) if inverse is None else len(inverse)
    D = C * sum(n * n for n in levels)
    cell_keys = plane_keys(features)
    kdtype, half = key_dtypes(HW)
    out = xp.empty((R, D), dtype=features.dtype)
    argmax = xp.empty((U, D), dtype=half)
    share = np.dtype(kdtype).itemsize == out.itemsize  # R >= U rows: room for every key
    store = out.reshape(-1)[:U * D].view(kdtype) if share else None
    offsets = dict(zip(levels, np.cumsum([0] + [U * n * n * C for n in levels]).tolist()))
    ratio = np.dtype(kdtype).itemsize // np.dtype(half).itemsize
    scratch = argmax.reshape(-1).view(kdtype) if (U * D) % ratio == 0 else None

    def slot(n):  # where the (U, n, n, C) keys of level n go (None: a new array)
        return None if store is None else store[offsets[n]:offsets[n] + U * n * n * C]

    keys = {}  # level n -> (U, n, n, C) max keys
    for n, parent in level_plan(levels, mode):
        where = slot(n)
        if parent is None:
            got = window_max(cell_keys, *level_bins(rois, n, mode)[:5], scratch=scratch,
                             out=None if where is None else where.reshape(U * n * n, C))
            keys[n] = got.reshape(U, n, n, C)
        else:
            f = parent // n
            parts = keys[parent].reshape(U, n, f, n, f, C)
            keys[n] = parts.max(axis=(2, 4), out=None if where is None else
                                where.reshape(U, n, n, C))
    # decode, straight into the output layout (U, C, n*n) per level:
    # h*W + w = 2**bits - 1 - (low half of the key)
    low_at = 0 if np.little_endian else 1  # which half of a native key is the low one
    top = half(2 ** (8 * np.dtype(half).itemsize) - 1)
    off = 0
    for n in levels:
        low = keys[n].reshape(U, n * n, C).view(half)[:, :, low_at::2]  # (U, n*n, C) view
        view = argmax[:, off:off + C * n * n].reshape(U, C, n * n)
        xp.subtract(top, low.transpose(0, 2, 1), out=view)
        off += C * n * n
    del keys  # the values overwrite them
    gather_max(features, argmax, channel_of_column(levels, C), R, images=rois[:, 0],
               rowmap=inverse, out=out)
    return out, argmax
