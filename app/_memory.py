"""Giving memory back: a large request body must not leave its pages with the process once it is done.

glibc serves an allocation of 128 KiB or more from pages of its own (``mmap``), returned to the
system on ``free``, but it raises that threshold to the size of any such block freed, up to 32 MiB;
after one 16 MiB body, later bodies come from the heap, whose freed memory stays with the process. Three
16 MiB streamed bodies then held 144 MiB for good. Fixing the threshold keeps each large buffer's pages
its own, so they leave with it. (Python's small objects live in its own arenas, which this does not touch.)
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["return_large_buffers"]

_M_MMAP_THRESHOLD = -3
_THRESHOLD = 128 * 1024


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at its default, for this process; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
