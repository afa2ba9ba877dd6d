"""Process-wide settings for speed on the CPU. The command line applies them where they pay; a program may too."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # freed memory at the top of the heap is given back beyond this much only
# Full-size photos: blocks up to this size come from the heap (a 12-megapixel photo's working copy at half size is
# 36 MB of floats), larger ones (the full-size photo as floats, 144 MB) are mapped on their own; and the heap keeps at
# most this much freed memory at its top (docs/speed.md, "Options and defaults")
PHOTO_HEAP_BLOCKS = 64 * 2**20
PHOTO_KEEP_BYTES = 256 * 2**20


def keep_freed_memory(largest: int | None = None) -> bool:
    """Have glibc's malloc serve allocations from its heap and keep freed memory for the next one.

    By default glibc gives each allocation above 32 MiB its own mapping and unmaps it when freed,
    so a loop that allocates the same activations every iteration (a ResNet-50 layer at batch 16
    is 51 MB, a 12-megapixel photo worked on at half size 36 MB) faults the same pages in again each time:
    measured here, it cut the time per image-iteration by about 10% at the model's size, and the kernel's time
    (page faults) on a 12-megapixel photo from 12-20 s to under 6 s (docs/speed.md, "Options and defaults").
    With ``largest=None`` every allocation comes from the heap and up to 2 GB of freed memory stays with the
    process (work at the model's input size: ``evaluate``, ``protect --size model``). With ``largest`` (full-size
    photos: :data:`PHOTO_HEAP_BLOCKS`) larger blocks are still mapped on their own and at most
    :data:`PHOTO_KEEP_BYTES` stays: allocations of many sizes (full-size photos, random JPEG views) would otherwise
    fragment the heap (3.3-3.9 GB instead of 2.5 GB for three 12-megapixel photos).
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
    if largest is None:
        return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    return mallopt(M_MMAP_THRESHOLD, largest) == 1 and mallopt(M_TRIM_THRESHOLD, PHOTO_KEEP_BYTES) == 1
