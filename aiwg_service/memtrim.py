"""Give freed heap memory back to the kernel after a burst (glibc's ``malloc_trim``).

A client that held megabytes (a partial line, replies it would not read) leaves the heap fragmented when it
goes: glibc keeps the freed pages, so RSS stays at the peak although nothing uses them. After such a
connection closes, one ``malloc_trim(0)`` (coalesced: at most one per second) returns them. Without glibc
this does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

_trim: Callable[[int], int] | None = None
_resolved = False
_pending = False


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up on first use: ``ctypes.util.find_library`` runs ``ldconfig``, which
    has no place in the service's start-up (it cost tens of milliseconds before the first answer)."""
    global _trim, _resolved
    if not _resolved:
        _resolved = True
        import ctypes

        for name in ("libc.so.6", None):
            try:
                if name is None:
                    import ctypes.util

                    name = ctypes.util.find_library("c")
                    if name is None:
                        break
                fn = ctypes.CDLL(name).malloc_trim
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
                _trim = fn
                break
            except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
                continue
    return _trim


def trim_soon(delay: float = 1.0) -> None:
    """Trim once, ``delay`` seconds from now (calls meanwhile are folded into it)."""
    global _pending
    if _pending:
        return
    _pending = True

    def run() -> None:
        global _pending
        _pending = False
        trim = _malloc_trim()
        if trim is None:
            return
        try:
            trim(0)
        except Exception as exc:  # never let housekeeping break the loop
            log.debug("malloc_trim failed: %s", exc)

    asyncio.get_running_loop().call_later(delay, run)
