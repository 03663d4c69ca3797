"""Giving memory back to the system after live sessions end (glibc only).

Measured with four 640x360 sessions at a time (tools/soak.py, docs/LIVE.md): each
session holds tens of MiB while it runs (frames in flight, its WebRTC connection,
detector state; docs/LIVE.md has the figures), and when it ends that memory is free in
the process but stays in its RSS: glibc keeps freed blocks in per-thread arenas, and
every session brings new threads. ``malloc_trim(0)`` returns the free pages of every
arena, and capping the number of arenas (``mallopt(M_ARENA_MAX)``) keeps sessions'
threads from spreading their blocks over many of them. Together they bring RSS back to
within ~50 MiB of the warmed-up idle figure after every round of sessions, where it
stayed +300 MiB without.

On other C libraries both calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc malloc.h


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int) -> bool:
    """Cap malloc arenas at ``count`` (0 leaves glibc's default); call before threads start."""
    libc = _glibc()
    if libc is None or count <= 0:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Return free heap pages to the system; True when some were released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def rss_mib() -> float | None:
    """This process's resident set size, from /proc (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
