"""Faults a test injects into the real service through ``AIWG_FAULTS``, where no real fault is reachable.

``AIWG_FAULTS="reload.apply=supervisor traces.write_delay=1.5"``: a reload's apply raises in the subsystem
named ``supervisor``; the rules trace writer sleeps 1.5 s (in its thread) before each write, like a slow disk.
Unset (always, outside tests) every check is one dictionary lookup that finds nothing.
"""

from __future__ import annotations

import os


class InjectedFault(RuntimeError):
    pass


def _table() -> dict[str, str]:
    raw = os.environ.get("AIWG_FAULTS", "")
    return dict(item.partition("=")[::2] for item in raw.split() if "=" in item)


def fail(point: str, key: str) -> None:
    """Raise at ``point`` when the fault names ``key`` (a subsystem, a writer)."""
    if _table().get(point) == key:
        raise InjectedFault(f"injected fault at {point} ({key})")


def delay(point: str) -> float:
    """Seconds to stall at ``point`` (0 unless a test asks)."""
    try:
        return max(0.0, float(_table().get(point, 0)))
    except ValueError:
        return 0.0


def stalling(point: str, seconds: float) -> None:
    """Stall here (in a worker thread) and say so in the log first, so a test knows the stall began."""
    import logging
    import time

    logging.getLogger("aiwg.faults").warning("fault: stalling %s for %g s", point, seconds)
    time.sleep(seconds)
