"""Give freed heap memory back to the kernel after a burst (glibc's ``malloc_trim``).

A client that held megabytes (a partial line, replies it would not read) leaves the heap fragmented when it
goes: glibc keeps the freed pages, so RSS stays at the peak although nothing uses them. After such a
connection closes, one ``malloc_trim(0)`` (coalesced: at most one per second) returns them. Without glibc
this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_trim = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = _libc.malloc_trim
    _trim.argtypes = [ctypes.c_size_t]
    _trim.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
    _trim = None

_pending = False


def trim_soon(delay: float = 1.0) -> None:
    """Trim once, ``delay`` seconds from now (calls meanwhile are folded into it)."""
    global _pending
    if _trim is None or _pending:
        return
    _pending = True

    def run() -> None:
        global _pending
        _pending = False
        try:
            _trim(0)
        except Exception as exc:  # never let housekeeping break the loop
            log.debug("malloc_trim failed: %s", exc)

    asyncio.get_running_loop().call_later(delay, run)
