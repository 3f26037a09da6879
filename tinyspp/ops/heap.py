"""glibc's heap settings for a training loop: keep freed memory instead of faulting it back in.

A training step allocates the same big arrays every step (each layer's output and gradient,
ReLU's mask, the pooling's winners, the columns of a convolution's pieces) and frees them by
the end of the step. glibc (Linux's C allocator, which NumPy uses) serves a request above its
``mmap`` threshold with pages mapped fresh from the OS, and gives the top of its heap back to the
OS once more than its trim threshold lies free there. It raises both thresholds as it sees big
blocks freed, but only up to the largest one freed so far, and a step frees several at once:
glibc trims its heap at the end of every step and the next step maps the same memory in again,
one page fault per 4 KiB page on first touch, thousands per step of the small SPP-net
(``docs/performance.md``, "Page faults", has the counts and the time they cost). torch's CPU
allocator, on the same glibc, pays the same.

:func:`keep_freed_memory` fixes the two thresholds where glibc's own adjustment would end up
anyway for arrays of up to ``MMAP_THRESHOLD`` bytes: blocks below 32 MiB come from the heap,
and the heap keeps up to ``TRIM_THRESHOLD`` (64 MiB) of free memory for the next step instead of
handing it back. Nothing else changes: bigger arrays are still mapped and unmapped on their own,
``tracemalloc`` and the arrays' contents are the same, and a process's resident memory grows by
at most the trim threshold. ``import tinyspp`` calls it once, unless

* the C library is not glibc (macOS, musl: nothing to do),
* ``$TINYSPP_KEEP_FREED=0`` (keep glibc's defaults), or
* the environment already sets glibc's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
  or ``MALLOC_TOP_PAD_`` (the user's choice wins).

>>> import tinyspp  # the import applied the settings, or recorded why not
>>> status() != "not applied yet"
True
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold on 64-bit
TRIM_THRESHOLD = 64 << 20  # twice that, as glibc sets it when it raises the mmap threshold
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (<malloc.h>)
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_status = "not applied yet"


def _glibc():
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def wanted() -> bool:
    """``$TINYSPP_KEEP_FREED``: ``1`` (the default) or ``0``; anything else is an error."""
    env = os.environ.get("TINYSPP_KEEP_FREED", "1").strip()
    if env not in ("0", "1"):
        raise ValueError(f"TINYSPP_KEEP_FREED must be 0 or 1, got {env!r}")
    return env == "1"


def keep_freed_memory() -> str:
    """Set glibc's mmap and trim thresholds (see the module docstring); return what was done,
    also kept for :func:`status`: ``"applied: ..."`` or why not."""
    global _status
    if not wanted():
        _status = "off ($TINYSPP_KEEP_FREED=0): glibc's defaults"
    elif any(name in os.environ for name in GLIBC_VARIABLES):
        set_here = [name for name in GLIBC_VARIABLES if name in os.environ]
        _status = f"left to the environment's {', '.join(set_here)}"
    else:
        libc = _glibc()
        if libc is None:
            _status = "not glibc: the C library's defaults"
        elif libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and \
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            _status = (f"applied: glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
                       f"trim threshold {TRIM_THRESHOLD >> 20} MiB")
        else:
            _status = "glibc refused mallopt: its defaults"
    return _status


def status() -> str:
    """What :func:`keep_freed_memory` did in this process (the benchmark records it)."""
    return _status
