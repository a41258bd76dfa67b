"""Freed buffers kept for reuse, so a stream of megabyte buffers costs no page faults.

A backup moves a gigabyte and more through buffers of 1 to 9 MiB: a chunk of the dump,
its zstd frame, its age file, a pack. glibc's malloc gives each buffer that large fresh
pages from the kernel and hands them back when it is freed (its heap's top is trimmed
beyond twice its mmap threshold, a threshold that starts at 128 KiB), so every buffer
costs a page fault per 4 KiB and the kernel's zeroing of it. Measured on the 1 GB + 1 GB
bench data (`perf stat -e page-faults` of an encrypted `odbox-backup run`): 412,000 page
faults, about 1 CPU second of a 10 s run; with the thresholds below, 41,000. restic (Go)
keeps its freed memory in its own heap, as this does.

`keep_freed_memory()` raises both thresholds to 16 MiB with glibc's `mallopt`: buffers
under 16 MiB come from the heap and a free heap top of up to 16 MiB per arena stays for
the next buffer. That is the price: up to 16 MiB per thread's arena held beyond what is
in use (the peak memory figures of `just bench-backup` include it). Elsewhere than glibc
(musl, macOS) it does nothing. The `GLIBC_TUNABLES` environment variable does the same,
but only when set before the process starts, which a command cannot do for itself.
"""

from __future__ import annotations

import os

THRESHOLD = 16 << 20
M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Whether glibc took the thresholds (False elsewhere, or if it refused them)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # "glibc 2.36"; no such name elsewhere
            return False
    except (ValueError, OSError):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on a value it refuses.
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
