"""What the web service does so that memory it used for a while goes back to the system: glibc's
allocator told to map large blocks on their own, and to trim its free pages after a big read.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's own start value, kept fixed (bytes)

_libc: ctypes.CDLL | None = None


def configure() -> None:
    """Serve every block of 128 KiB or more by mmap, so it goes back at free: scrypt's 16 MiB, a
    page of sessions as JSON, a CSV. By default glibc raises that threshold after the first such
    free and keeps later ones in a worker thread's arena (measured: +15 MB RSS per login, for good).
    And one arena for every thread: the records are read in worker threads, and malloc_trim gives
    back the top of the main arena only (measured: 0.3 MB kept per worker thread after a round)."""
    global _libc
    try:
        _libc = ctypes.CDLL("libc.so.6")
        _libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _libc.mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc: its allocator decides
        _libc = None


def trim() -> None:
    """Give free heap pages back (every arena, not only the top of the main one): after reading
    many sessions, the freed rows leave holes that RSS would keep (measured: 3 MB for 2,000)."""
    if _libc is not None:
        _libc.malloc_trim(0)
