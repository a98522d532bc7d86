"""How late a 10 ms timer fires on the event loop: the time the service's own work kept the loop from
answering, shown in ``daemon.status`` (``snapshot()``, for ``/metrics`` too) and logged past 100 ms with
the code that was running.

An idle service must sleep, so the timer is armed only while there is work: ``poke()`` (an RPC request, an
event published, a heartbeat) arms it, and it disarms itself after a quiet second. A stall that begins
inside the poking callback is still measured: the timer's due time is set at the poke. While armed, a
sampler thread looks at the loop every 50 ms; when the timer is overdue it records where the loop thread
is (the innermost frames of our own code), so the log line names what ran, not just how long.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import Any

log = logging.getLogger("aiwg.loop")

INTERVAL = 0.010  # the probe timer
QUIET_TICKS = 100  # ~1 s without a poke: disarm
LOG_OVER = 0.100
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 5000)

_monitor: LoopLag | None = None


def poke() -> None:
    """There is work on the loop: measure it (cheap; a no-op when no monitor is installed)."""
    m = _monitor
    if m is not None:
        m.poke()


def snapshot() -> dict[str, Any]:
    """The installed monitor's figures (``{}`` without one): for ``daemon.status`` and ``/metrics``."""
    return _monitor.snapshot() if _monitor is not None else {}


class LoopLag:
    def __init__(self, log_over: float = LOG_OVER) -> None:
        self.log_over = log_over
        self.loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._quiet = 0
        self.samples = 0
        self.last_ms = 0.0
        self.max_ms = 0.0
        self.stalls = 0  # over log_over
        self.last_stall: dict[str, Any] | None = None
        self.buckets = [0] * (len(BUCKETS_MS) + 1)
        self.sum_ms = 0.0
        self._where: str | None = None
        self._sampled_due = -1.0
        self._armed = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()

    # -- lifecycle -----------------------------------------------------------------------------------
    def install(self) -> None:
        global _monitor
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._sampler, name="aiwg-looplag", daemon=True)
        self._thread.start()
        _monitor = self
        self.poke()

    def close(self) -> None:
        global _monitor
        if _monitor is self:
            _monitor = None
        self._closed = True
        self._armed.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    # -- the probe -----------------------------------------------------------------------------------
    def poke(self) -> None:
        self._quiet = 0
        if self._handle is None and self.loop is not None and not self._closed:
            self._arm()
            self._armed.set()

    def _arm(self) -> None:
        assert self.loop is not None
        self._due = time.monotonic() + INTERVAL  # the clock the sampler thread reads too
        self._handle = self.loop.call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        assert self.loop is not None
        lag = max(0.0, time.monotonic() - self._due)
        self._record(lag)
        self._quiet += 1
        if self._quiet >= QUIET_TICKS:
            self._handle = None
            self._armed.clear()
        else:
            self._arm()

    def _record(self, lag: float) -> None:
        ms = lag * 1000
        self.samples += 1
        self.last_ms = ms
        self.sum_ms += ms
        self.max_ms = max(self.max_ms, ms)
        i = next((i for i, b in enumerate(BUCKETS_MS) if ms <= b), len(BUCKETS_MS))
        self.buckets[i] += 1
        if lag > self.log_over:
            self.stalls += 1
            where = self._where if self._sampled_due == self._due else None
            self.last_stall = {"ms": round(ms, 1), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "where": where}
            log.warning("event loop blocked for %.0f ms%s", ms, f" (in {where})" if where else "")

    # -- naming what ran -------------------------------------------------------------------------------
    def _sampler(self) -> None:
        while not self._closed:
            self._armed.wait()
            if self._closed:
                return
            time.sleep(0.05)
            loop, due = self.loop, self._due
            if loop is None or self._handle is None or self._sampled_due == due:
                continue
            if time.monotonic() - due > self.log_over * 0.8:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    self._where = describe(frame)
                    self._sampled_due = due

    def snapshot(self) -> dict[str, Any]:
        return {"last_ms": round(self.last_ms, 2), "max_ms": round(self.max_ms, 2), "samples": self.samples,
                "stalls_over_100ms": self.stalls, "last_stall": self.last_stall, "armed": self._handle is not None,
                "histogram_ms": dict(zip([*map(str, BUCKETS_MS), "+Inf"], self.buckets, strict=True)),
                "sum_ms": round(self.sum_ms, 1)}


def describe(frame: Any, depth: int = 3) -> str:
    """The innermost frames of the service's own code (else the innermost frame), innermost first."""
    stack = traceback.extract_stack(frame)
    ours = [f for f in reversed(stack) if "aiwg_service" in f.filename and "looplag" not in f.filename]
    picked = ours[:depth] or list(reversed(stack))[:1]
    return " ← ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in picked)


def _short(path: str) -> str:
    i = path.rfind("aiwg_service/")
    return path[i + len("aiwg_service/"):] if i >= 0 else path.rsplit("/", 1)[-1]
