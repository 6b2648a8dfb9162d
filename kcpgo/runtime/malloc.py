"""glibc allocator thresholds for batch work (docs/deviations.md D55).

A bulk session handles its datagrams in batches: a flush of ~60 datagrams, a received batch
of up to a few hundred, each with joined buffers of 80-400 KB that live for one batch. With
glibc's defaults every batch gives that memory back to the kernel (the heap top is trimmed
past 128 KiB free, larger blocks are mmap'ed and unmapped) and the next batch faults the same
pages in again. Raising the two thresholds keeps the freed memory in the process:
``bench sink --crypt aes --fec 10/3`` went from 49-64 to 72-85 MB/s (A/B interleaved, the
same thresholds set through glibc's environment variables).

The first kcpgo runtime of a process calls :func:`tune` once. It only raises thresholds: a
process keeps at most :data:`TRIM_THRESHOLD` bytes of free heap beyond what it uses. It does
nothing when the process chose its own (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_`` or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``), off glibc,
with ``KCPGO_MALLOC_TUNING=0``, or after :func:`set_malloc_tuning` ``(False)``.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

from ._originals import allocate_lock

__all__ = ["TRIM_THRESHOLD", "MMAP_THRESHOLD", "tune", "set_malloc_tuning", "tuned"]

#: Free heap the process keeps instead of trimming it (glibc default: 128 KiB, adjusted
#: upwards as large blocks are freed).
TRIM_THRESHOLD = 16 << 20
#: Blocks from this size up are mmap'ed (glibc default: 128 KiB, adjusted upwards).
MMAP_THRESHOLD = 4 << 20
#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT = 128 << 10
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_lock = allocate_lock()  # a real lock: the I/O thread's runtime may call tune()
_enabled = os.environ.get("KCPGO_MALLOC_TUNING", "1") != "0"
_tuned = False


def _mallopt() -> Optional[object]:
    """glibc's ``mallopt``, or None off Linux/glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def tune() -> bool:
    """Raise glibc's trim and mmap thresholds, once per process; whether they are raised.
    Called by the first kcpgo runtime; safe to call again (a no-op)."""
    global _tuned
    with _lock:
        if _tuned or not _enabled or any(name in os.environ for name in _USER_SETTINGS) \
                or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
            return _tuned
        mallopt = _mallopt()
        if mallopt is None:
            return False
        _tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        return _tuned


def set_malloc_tuning(enabled: bool) -> None:
    """Allow (the default) or forbid :func:`tune`. ``False`` after it ran puts glibc's static
    defaults (128 KiB each) back; its dynamic adjustment stays off, as after any mallopt."""
    global _enabled, _tuned
    with _lock:
        _enabled = bool(enabled)
        if not enabled and _tuned:
            mallopt = _mallopt()
            if mallopt is not None:
                mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
                mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
            _tuned = False


def tuned() -> bool:
    """Whether this process runs with kcpgo's thresholds."""
    return _tuned
