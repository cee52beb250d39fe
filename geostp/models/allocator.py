"""Tune glibc's allocator for the large, short-lived tensors of CPU training.

With glibc's defaults every tensor over a few megabytes is a fresh ``mmap``
whose pages fault in one by one and go back to the kernel on free, and the
heap top is trimmed as soon as it is 2x the last large block.  A CPU training
step of TAU or PredRNN allocates and frees thousands of such tensors, and on
a two-core machine this page churn took well over half of the step.  Keeping
large blocks on the heap and never trimming it makes freed memory reusable at
once; the cost is that the process keeps its peak memory until it exits.

Because of that cost it is never applied on import: :func:`tune_allocator`
runs at the start of training (:meth:`geostp.train.trainer.Trainer.fit`, and
the benchmark scripts that train or time models), so a program that only
lists models, reads a checkpoint or plots keeps glibc's defaults.  Set the
environment variable ``GEOSTP_NO_MALLOPT=1`` to leave the allocator alone
everywhere.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

__all__ = ["tune_allocator", "ALLOCATOR_TUNED"]

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Blocks below 1 GiB come from the heap; the free heap top is only returned to
# the kernel beyond 2 GiB (mallopt takes a C int); the heap grows 256 MiB at a
# time.  Address space reserved this way costs nothing until it is touched.
_SETTINGS = {
    _M_MMAP_THRESHOLD: 1 << 30,
    _M_TRIM_THRESHOLD: (1 << 31) - 1,
    _M_TOP_PAD: 1 << 28,
}

ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Apply the settings once; return True when glibc accepted all of them.

    Does nothing (and returns False) off Linux/glibc, when
    ``GEOSTP_NO_MALLOPT=1``, or when ``mallopt`` is unavailable; never raises.
    """
    global ALLOCATOR_TUNED
    if ALLOCATOR_TUNED:
        return True
    if os.environ.get("GEOSTP_NO_MALLOPT", "").strip() not in ("", "0"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        ok = all(mallopt(param, value) == 1 for param, value in _SETTINGS.items())
    except (OSError, AttributeError):
        return False
    ALLOCATOR_TUNED = ok
    return ok
