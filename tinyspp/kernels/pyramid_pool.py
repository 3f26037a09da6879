"""The four wrappers of ``pyramid_pool.cu``: check the arguments, pack the bins, launch.

One kernel source, two ways to run it, chosen from the array type: CuPy arrays go to
:mod:`tinyspp.kernels.cuda` (``cupy.RawModule`` on the GPU), NumPy arrays to
:mod:`tinyspp.kernels.emulate` (the same file compiled as C++, every block and thread run in
order on the CPU: a test harness, not a fast path). ``tinyspp.ops`` calls these with
``impl="cuda"`` (CuPy) or ``impl="emulate"`` (NumPy).

Inputs are what the ops have after validation: ``x (N, C, H, W)`` float32/float64
C-contiguous, a :class:`tinyspp.bins.BinTable` for image SPP, integer ``rois (R, 5) =
[b, x0, y0, x1, y1]`` (inclusive cells; NumPy rois with CuPy features are checked on the host and
copied to the device once) for region SPP. Outputs use the library's layout: ``out (N, C * M)``
with ``M = sum(n*n)``, levels in order, each level channel-major; ``argmax`` has the shape of
``out``, int64, the flat index ``y * W + x`` of the maximum inside its (H, W) plane (for region
SPP: the plane of the RoI's image; this is the region-pooling argmax format of
``tinyspp.ops.roi``), ``None`` for ``pool="avg"``. Ties go to the first maximum in row-major
order; NaN propagates (the first NaN of a bin wins).

Per geometry, the bin table is checked and packed into one int64 array ONCE, and on a GPU
copied to the device once (``_packed_table``'s cache, keyed by device and the table's contents):
repeated forward and backward passes on maps of one size pay neither the Python checks nor a
host-to-device copy. ``threads`` and ``max_blocks`` set the launch size (256 threads, up to
65535 blocks); a small ``max_blocks`` exercises the kernels' grid-stride loop.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..validate import check_array, check_choice, check_int, check_levels, check_nchw, check_rois
from .common import MAX_BLOCKS, POOLS, THREADS, entry_name

TABLE_CACHE_SIZE = 64  # packed bin tables kept per process (one per map size, device, levels)
_TABLES: dict = {}


def _launch(like, entry, total, args, threads, max_blocks):
    """Run ``entry`` on the GPU for CuPy data, in the CPU emulation for NumPy data."""
    if total == 0:
        return
    if backend.is_gpu_array(like):
        from . import cuda as runner
    else:
        from . import emulate as runner
    runner.launch(entry, total, args, threads=threads, max_blocks=max_blocks)


def _check_data(a, name, func, ndim, shape=None):
    """A float32/float64 C-contiguous array (of ``shape`` when given)."""
    check_array(a, name, func, ndim=ndim)
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{func}: {name} must be float32 or float64, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{func}: {name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{func}: {name} must be C-contiguous; pass xp.ascontiguousarray({name})")
    return tuple(a.shape)


def _check_index(a, name, func, shape, xp):
    """An int64 C-contiguous array of ``shape`` on the same device as the data."""
    if backend.get_array_module(a) is not xp or not isinstance(a, xp.ndarray):
        raise TypeError(f"{func}: {name} must be a {xp.__name__} ndarray like the data, "
                        f"got {type(a).__name__}")
    if a.dtype != np.int64 or tuple(a.shape) != tuple(shape) or not a.flags.c_contiguous:
        raise ValueError(f"{func}: {name} must be a C-contiguous int64 array of shape "
                         f"{tuple(shape)}, got {a.dtype} {tuple(a.shape)}")


def _device_key(xp):
    return "cpu" if xp is np else ("gpu", xp.cuda.Device().id)


def _remember(key, value):
    if len(_TABLES) >= TABLE_CACHE_SIZE:
        _TABLES.pop(next(iter(_TABLES)))  # the oldest entry
    _TABLES[key] = value
    return value


def _levels(levels, func, xp=np):
    """``[level_n, bin0]`` int64 arrays (on ``xp``'s device, cached) and ``M``."""
    levels = check_levels(levels, func)
    key = ("levels", _device_key(xp), levels)
    if key not in _TABLES:
        level_n = np.asarray(levels, dtype=np.int64)
        sizes = level_n * level_n
        bin0 = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        packed = xp.asarray(np.concatenate([level_n, bin0]))
        L = len(levels)
        _remember(key, ([packed[:L], packed[L:]], int(sizes.sum())))
    return _TABLES[key]


def _packed_table(table, H, W, xp, func):
    """Device arrays ``[level_n, bin0, y0, y1, x0, x1, area]`` of a checked BinTable, and ``M``.

    The bins must lie inside the (H, W) map, be non-empty and, within a level, share their
    row edges along ``bx`` and column edges along ``by`` (as ``bin_table`` builds them); the
    divisors (``table.area``, default the bins' areas) must be positive. Checked and copied to
    the device once per distinct table (cached).
    """
    if not all(hasattr(table, f) for f in ("levels", "y0", "y1", "x0", "x1")):
        raise TypeError(f"{func}: table must be a tinyspp.bins.BinTable (from bin_table(H, W, "
                        f"levels, mode)), got {type(table).__name__}")
    levels = check_levels(table.levels, func)
    M = sum(n * n for n in levels)
    edges = []
    for name in ("y0", "y1", "x0", "x1"):
        e = np.asarray(getattr(table, name, None))
        if e.shape != (M,) or not np.issubdtype(e.dtype, np.integer):
            raise ValueError(f"{func}: table.{name} must be {M} integers (one per bin of "
                             f"levels {levels}), got {e.dtype} {e.shape}")
        edges.append(np.ascontiguousarray(e, dtype=np.int64))
    y0, y1, x0, x1 = edges
    area = getattr(table, "area", None)
    area = (y1 - y0) * (x1 - x0) if area is None else np.asarray(area).astype(np.int64)
    key = ("table", _device_key(xp), H, W, levels, *(e.tobytes() for e in (*edges, area)))
    if key in _TABLES:
        return _TABLES[key]
    if not (np.all(0 <= y0) and np.all(y0 < y1) and np.all(y1 <= H)
            and np.all(0 <= x0) and np.all(x0 < x1) and np.all(x1 <= W)):
        raise ValueError(f"{func}: table bins must be non-empty and inside the ({H}, {W}) map; "
                         "build the table with tinyspp.bins.bin_table(H, W, levels, mode)")
    if area.shape != (M,) or not np.all(area > 0):
        raise ValueError(f"{func}: table.area must be {M} positive integers, got {area!r}")
    level_n = np.asarray(levels, dtype=np.int64)
    bin0 = np.concatenate([[0], np.cumsum(level_n * level_n)[:-1]]).astype(np.int64)
    for n, b in zip(levels, bin0):
        gy0, gy1, gx0, gx1 = (e[b:b + n * n].reshape(n, n) for e in edges)  # (by, bx)
        if any((g != g[:, :1]).any() for g in (gy0, gy1)) or \
                any((g != g[:1]).any() for g in (gx0, gx1)):
            raise ValueError(f"{func}: table level n={n} is not a grid of bins (rows must share "
                             "y edges, columns x edges); build it with tinyspp.bins.bin_table")
    packed = xp.asarray(np.concatenate([level_n, bin0, *edges, area]))  # one host-to-device copy
    L = len(levels)
    cuts = np.cumsum([0, L, L, M, M, M, M, M])
    return _remember(key, ([packed[cuts[k]:cuts[k + 1]] for k in range(7)], M))


def _pool_max(pool, func):
    return int(check_choice(pool, "pool", func, POOLS) == "max")


def spp_forward(x, table, pool="max", *, threads=THREADS, max_blocks=MAX_BLOCKS):
    """Image SPP forward, all levels in one kernel launch.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64, C-contiguous (NumPy or CuPy)
    table : tinyspp.bins.BinTable
        The bins of an (H, W) map, any mode (``bin_table(H, W, levels, mode)``); average pooling
        divides by ``table.area``.
    pool : {"max", "avg"}

    Returns
    -------
    out : ndarray of shape (N, C * M), ``M = sum(n*n)``, dtype of ``x``
    argmax : int64 ndarray of shape (N, C * M), or None for ``pool="avg"``
    """
    func = "kernels.spp_forward"
    N, C, H, W = check_nchw(x, "x", func)
    _check_data(x, "x", func, 4)
    pool_max = _pool_max(pool, func)
    xp = backend.get_array_module(x)
    (level_n, bin0, y0, y1, x0, x1, area), M = _packed_table(table, H, W, xp, func)
    out = xp.empty((N, C * M), dtype=x.dtype)
    argmax = xp.empty((N, C * M) if pool_max else (1,), dtype=np.int64)
    _launch(x, entry_name("spp_forward", x.dtype), N * C * M,
            [x, N, C, H, W, len(level_n), level_n, bin0, M, y0, y1, x0, x1, area, pool_max, out,
             argmax], threads, max_blocks)
    return out, (argmax if pool_max else None)


def spp_backward(dout, argmax, x_shape, table, pool="max", *, threads=THREADS,
                 max_blocks=MAX_BLOCKS):
    """Image SPP backward: a gather, one thread per input cell (see ``pyramid_pool.cu``).

    Parameters
    ----------
    dout : ndarray of shape (N, C * M), float32 or float64
    argmax : int64 ndarray of shape (N, C * M) from :func:`spp_forward`; None for avg
    x_shape : tuple (N, C, H, W)
    table : tinyspp.bins.BinTable, the one used in the forward pass
    pool : {"max", "avg"}

    Returns
    -------
    dx : ndarray of shape (N, C, H, W), dtype of ``dout``
    """
    func = "kernels.spp_backward"
    N, C, H, W = _shape4(x_shape, func)
    pool_max = _pool_max(pool, func)
    xp = backend.get_array_module(dout)
    (level_n, bin0, y0, y1, x0, x1, area), M = _packed_table(table, H, W, xp, func)
    _check_data(dout, "dout", func, 2, (N, C * M))
    if pool_max:
        _check_index(argmax, "argmax", func, (N, C * M), xp)
    else:
        argmax = xp.empty((1,), dtype=np.int64)
    dx = xp.empty((N, C, H, W), dtype=dout.dtype)
    _launch(dout, entry_name("spp_backward", dout.dtype), N * C * H * W,
            [dout, argmax, N, C, H, W, len(level_n), level_n, bin0, M, y0, y1, x0, x1, area,
             pool_max, dx], threads, max_blocks)
    return dx


def _shape4(shape, func, name="x_shape"):
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"{func}: {name} must be a tuple (N, C, H, W), got {shape!r}") from None
    if len(dims) != 4:
        raise ValueError(f"{func}: {name} must be a tuple (N, C, H, W), got {shape!r}")
    return tuple(check_int(d, f"{name}[{i}]", func) for i, d in enumerate(dims))


def _device_rois(rois, shape, xp, func):
    """Validated int64 rois on ``xp``'s device: checked on the host (``check_rois``; CuPy rois
    make one device-to-host copy for it), then one host-to-device copy."""
    return xp.asarray(check_rois(rois, shape, func))


def roi_spp_forward(features, rois, levels, pool="max", *, threads=THREADS,
                    max_blocks=MAX_BLOCKS):
    """Region SPP forward: adaptive bins over each RoI, computed inside the kernel.

    Parameters
    ----------
    features : ndarray of shape (N, C, H, W), float32 or float64, C-contiguous
    rois : integer ndarray of shape (R, 5), rows [b, x0, y0, x1, y1], inclusive cells
    levels : sequence of int, bins per side
    pool : {"max", "avg"}

    Returns
    -------
    out : ndarray of shape (R, C * M), ``M = sum(n*n)``
    argmax : int64 ndarray of shape (R, C * M), index within the (H, W) plane of image b;
        None for ``pool="avg"``
    """
    func = "kernels.roi_spp_forward"
    N, C, H, W = check_nchw(features, "features", func)
    _check_data(features, "features", func, 4)
    pool_max = _pool_max(pool, func)
    xp = backend.get_array_module(features)
    rois = _device_rois(rois, (N, C, H, W), xp, func)
    R = len(rois)
    (level_n, bin0), M = _levels(levels, func, xp)
    out = xp.empty((R, C * M), dtype=features.dtype)
    argmax = xp.empty((R, C * M) if pool_max else (1,), dtype=np.int64)
    _launch(features, entry_name("roi_spp_forward", features.dtype), R * C * M,
            [features, C, H, W, rois, R, len(level_n), level_n, bin0, M, pool_max, out, argmax],
            threads, max_blocks)
    return out, (argmax if pool_max else None)


def roi_spp_backward(dout, argmax, rois, features_shape, levels, pool="max", *, threads=THREADS,
                     max_blocks=MAX_BLOCKS):
    """Region SPP backward: a scatter with atomicAdd, one thread per output element.

    Parameters
    ----------
    dout : ndarray of shape (R, C * M), float32 or float64
    argmax : int64 ndarray of shape (R, C * M) from :func:`roi_spp_forward`; None for avg
    rois : integer ndarray of shape (R, 5), the forward's RoIs
    features_shape : tuple (N, C, H, W)
    levels : sequence of int
    pool : {"max", "avg"}

    Returns
    -------
    dfeatures : ndarray of shape (N, C, H, W), dtype of ``dout``
    """
    func = "kernels.roi_spp_backward"
    N, C, H, W = _shape4(features_shape, func, "features_shape")
    pool_max = _pool_max(pool, func)
    xp = backend.get_array_module(dout)
    rois = _device_rois(rois, (N, C, H, W), xp, func)
    R = len(rois)
    (level_n, bin0), M = _levels(levels, func, xp)
    _check_data(dout, "dout", func, 2, (R, C * M))
    if pool_max:
        _check_index(argmax, "argmax", func, (R, C * M), xp)
        # argmax addresses memory in the scatter. The kernel skips indices outside the plane;
        # on the CPU they are also reported (on the GPU that check would read argmax again).
        if xp is np and argmax.size and not (argmax.min() >= 0 and argmax.max() < H * W):
            raise ValueError(f"{func}: argmax values must lie in [0, {H * W}) (H * W)")
    else:
        argmax = xp.empty((1,), dtype=np.int64)
    dfeatures = xp.zeros((N, C, H, W), dtype=dout.dtype)
    _launch(dout, entry_name("roi_spp_backward", dout.dtype), R * C * M,
            [dout, argmax, rois, R, C, H, W, len(level_n), level_n, bin0, M, pool_max,
             dfeatures], threads, max_blocks)
    return dfeatures
