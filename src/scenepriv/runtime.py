"""Process-wide settings for speed on the CPU. The command line applies them where they pay; a program may too."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # freed memory at the top of the heap is given back beyond this much only


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every allocation from its heap and keep freed memory for the next one.

    By default glibc gives each allocation above 32 MiB its own mapping and unmaps it when freed,
    so a loop that allocates the same activations every iteration (a ResNet-50 layer at batch 16
    is 51 MB) faults the same pages in again each time: measured here, it cut the time per
    image-iteration by about 10% (docs/speed.md, "Options and defaults"). The cost: freed memory stays with the process
    until it exits, and allocations of many different sizes (full-size photos, random JPEG views)
    fragment the heap: 3.3-3.9 GB instead of 2.5 GB for three 12-megapixel photos. So the command
    line applies it to work at the model's input size only (``evaluate``, ``protect --size model``).
    Returns whether the setting was applied: False off Linux and on C libraries other than glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
