"""The first maximum of many rectangles at once: integer keys and window tables.

Region pooling asks for the maximum (and where it is) of tens of thousands of rectangles of one
feature map. Two ideas make that a handful of array operations:

* **Keys** (``plane_keys``). Each cell of each (image, channel) plane gets the integer
  ``rank << bits | (2**bits - 1 - (h*W + w))``, ``rank`` the dense rank of its value in the plane
  (NaN highest). The largest key of a rectangle is its maximum at the smallest flat index, i.e.
  the first maximum in row-major order, NaN-sticky: SPP's tie rule as a single integer ``max``,
  which also makes overlapping rectangles safe to combine.
* **Window tables** (``WindowTable``, ``window_max``): the max key of every ``p x q`` window,
  built by doubling like a sparse table, channel-last so each look-up moves a ``C``-vector.

Examples
--------
>>> import numpy as np
>>> x = np.array([[[[1.0, 3.0, 3.0], [0.0, 2.0, 3.0]]]])       # (1, 1, 2, 3): ties at 3
>>> keys = plane_keys(x)                                         # (N, H, W, C)
>>> best = window_max(keys, np.array([0]), np.array([0]), np.array([2]), np.array([0]),
...                   np.array([3]))                             # the whole 2 x 3 map
>>> int(2**16 - 1 - (best[0, 0] & 0xFFFF))                        # flat index of the first 3
1
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module


def key_dtypes(HW):
    """``(key dtype, half dtype)``: uint32 keys with 16-bit halves while ``H*W <= 2**16``,
    else uint64 keys with 32-bit halves. The high half holds the rank, the low half the
    reversed flat index, so the low half is readable as a strided view: no masking pass."""
    return (np.uint32, np.uint16) if HW <= 2**16 else (np.uint64, np.uint32)


def plane_keys(features):
    """Channel-last ``(N, H, W, C)`` integer keys whose max is the first maximum (module doc).

    ``key = rank << bits | (2**bits - 1 - h*W - w)``, ``rank`` the dense rank of the value within
    its (image, channel) plane, ``bits`` half the key's width (see ``key_dtypes``).
    """
    xp = get_array_module(features)
    N, C, H, W = features.shape
    HW = H * W
    kdtype, half = key_dtypes(HW)
    bits = 8 * np.dtype(half).itemsize
    planes = features.reshape(N * C, HW)
    order = xp.argsort(planes, axis=1)  # NaN sort last; order among equals is irrelevant
    s = xp.take_along_axis(planes, order, axis=1)
    new = (s[:, 1:] != s[:, :-1]) & ~(xp.isnan(s[:, 1:]) & xp.isnan(s[:, :-1]))
    rank_sorted = xp.zeros((N * C, HW), dtype=kdtype)
    xp.cumsum(new, axis=1, dtype=kdtype, out=rank_sorted[:, 1:])
    keys = xp.empty_like(rank_sorted)
    keys[xp.arange(N * C)[:, None], order] = rank_sorted << kdtype(bits)
    keys |= (2**bits - 1 - xp.arange(HW)).astype(kdtype)
    return xp.ascontiguousarray(keys.reshape(N, C, H, W).transpose(0, 2, 3, 1))


TABLE_BUDGET = 2**29  # bytes of window tables before fewer exact sizes are used


class WindowTable:
    """Max keys of every ``p x q`` window of the map, for the window sizes the queries need.

    Window sides up to ``exact`` are stored exactly, so a bin of that size is ONE look-up; a longer
    side uses the largest power of two not above it and two overlapping look-ups (a sparse table
    along that axis). Window ``(p, q)`` is the max of two smaller ones, ``(p, q1)`` at ``x`` and
    ``(p, q - q1)`` at ``x + q1`` (one ``maximum`` per table). All tables share one channel-last
    ``(rows, C)`` buffer, so a single ``take`` answers every bin.
    """

    def __init__(self, keys, exact):
        self.keys, self.exact = keys, exact
        self.order = []  # window sizes, dependencies first
        self.layout = {}  # (p, q) -> (first buffer row, H - p + 1, W - q + 1)

    def side(self, length):
        """Window side used for a bin side of ``length`` (vectorised)."""
        pow2 = 1 << (np.frexp(length)[1] - 1)  # largest power of two <= length
        return np.where(length <= self.exact, length, pow2)

    def split(self, length):
        return length // 2 if length > self.exact else length - 1

    def require(self, p, q):
        if (p, q) in self.layout:
            return
        if q > 1:
            q1 = self.split(q)
            self.require(p, q1), self.require(p, q - q1)
        elif p > 1:
            p1 = self.split(p)
            self.require(p1, 1), self.require(p - p1, 1)
        N, H, W, C = self.keys.shape
        rows = sum(N * Hp * Wq for _, Hp, Wq in self.layout.values())
        self.layout[p, q] = (rows, H - p + 1, W - q + 1)
        self.order.append((p, q))

    def nbytes(self):
        """Size of the buffer the required tables need."""
        N, H, W, C = self.keys.shape
        return sum(N * Hp * Wq for _, Hp, Wq in self.layout.values()) * C * self.keys.itemsize

    def build(self, scratch=None):
        """Fill every required table into one buffer; return it as (rows, C).

        ``scratch``: optional flat array of the keys' dtype to build in when it is large enough
        (memory the caller overwrites later), else a new buffer is allocated.
        """
        xp = get_array_module(self.keys)
        N, H, W, C = self.keys.shape
        total = sum(N * Hp * Wq for _, Hp, Wq in self.layout.values())
        if scratch is not None and scratch.size >= total * C:
            self.buffer = scratch[:total * C].reshape(total, C)
        else:
            self.buffer = xp.empty((total, C), dtype=self.keys.dtype)
        for p, q in self.order:
            out = self.table(p, q)
            if (p, q) == (1, 1):
                out[...] = self.keys
            elif q > 1:
                q1 = self.split(q)
                a, b = self.table(p, q1), self.table(p, q - q1)
                xp.maximum(a[:, :, :out.shape[2]], b[:, :, q1:], out=out)
            else:
                p1 = self.split(p)
                a, b = self.table(p1, 1), self.table(p - p1, 1)
                xp.maximum(a[:, :out.shape[1]], b[:, p1:], out=out)
        return self.buffer

    def table(self, p, q):
        start, Hp, Wq = self.layout[p, q]
        N, C = self.keys.shape[0], self.keys.shape[3]
        return self.buffer[start:start + N * Hp * Wq].reshape(N, Hp, Wq, C)

    def rows(self, p, q, b, y, x):
        """Buffer row of window ``(p[i], q[i])`` at ``(y[i], x[i])`` of image ``b[i]``."""
        N, H, W, C = self.keys.shape
        info = np.zeros((H + 1, W + 1, 3), dtype=np.int64)  # (p, q) -> start, Hp, Wq
        for (pp, qq), layout in self.layout.items():
            info[pp, qq] = layout
        start, Hp, Wq = info[p, q].T  # one gather, not a dict look-up per query
        return start + (b * Hp + y) * Wq + x


def window_max(keys, b, ys, ye, xs, xe, exact=None, out=None, scratch=None):
    """Max key of each rectangle ``[ys, ye) x [xs, xe)`` of image ``b``: shape (Q, C).

    ``keys (N, H, W, C)``; the rectangle arrays are (Q,) int64. ``out``: optional contiguous
    (Q, C) result array of the keys' dtype. ``scratch``: optional flat array of the keys' dtype
    the tables may be built in (see ``WindowTable.build``): reusing memory the caller needs
    anyway avoids first-touch page faults of a fresh buffer. ``exact``: longest window side
    stored exactly. Default: 8 when there are many queries per map cell (each exact table costs
    one pass over the map, each avoided look-up saves a C-vector per query), 2 for few queries,
    halved while the tables would pass ``TABLE_BUDGET`` bytes; 1 is a pure sparse table.
    """
    xp = get_array_module(keys)
    N, H, W, C = keys.shape
    choices = [exact] if exact else [8, 4, 2, 1] if len(b) >= 10 * N * H * W else [2, 1]
    for exact in choices:  # plan first (cheap), allocate once
        table = WindowTable(keys, exact)
        p, q = table.side(ye - ys), table.side(xe - xs)
        for pq in np.unique(p * (W + 1) + q).tolist():  # the distinct window sizes
            table.require(*divmod(pq, W + 1))
        if table.nbytes() <= TABLE_BUDGET:
            break
    buffer = table.build(scratch)
    rows = xp.asarray(table.rows(p, q, b, ys, xs))
    if out is None:
        out = xp.take(buffer, rows, axis=0)
    elif xp is np:  # rows are in range: "wrap" skips the bounds check (and its copy of out)
        np.take(buffer, rows, axis=0, out=out, mode="wrap")
    else:
        xp.take(buffer, rows, axis=0, out=out)
    tall, wide = (ye - ys) != p, (xe - xs) != q  # sides that need a second, overlapping window
    for y, x, need in ((ye - p, xs, tall), (ys, xe - q, wide), (ye - p, xe - q, tall & wide)):
        sel = np.flatnonzero(need)
        if sel.size:
            more = xp.take(buffer, xp.asarray(table.rows(p[sel], q[sel], b[sel], y[sel], x[sel])),
                           axis=0)
            sel = xp.asarray(sel)
            out[sel] = xp.maximum(out[sel], more)
    return out
