"""Token buckets (per hook, per source address) and a log limiter, so a flood costs little and logs little."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any


class Buckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``. At most ``max_keys`` are kept (LRU), so
    a flood from many addresses cannot grow memory without bound."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self._b: OrderedDict[Any, list[float]] = OrderedDict()

    def take(self, key: Any, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        b = self._b.get(key)
        if b is None:
            if len(self._b) >= self.max_keys:
                self._b.popitem(last=False)
            b = self._b[key] = [self.burst, now]
        else:
            self._b.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False


class LogLimiter:
    """One line per (hook, status) per ``every`` seconds; the next line says how many were left out.

    Keyed by status, not by reason or address, and every unknown hook id shares one key: a flood of random
    paths, bodies or source addresses cannot turn into a flood of log lines.
    """

    def __init__(self, log: logging.Logger, every: float = 10.0) -> None:
        self.log, self.every = log, every
        self._last: dict[tuple[str, int], list[float]] = {}

    def refused(self, hook: str, known: bool, reason: str, status: int, source: str) -> None:
        key = (hook if known else "<unknown>", status)
        now = time.monotonic()
        st = self._last.get(key)
        if st is not None and now - st[0] < self.every:
            st[1] += 1
            return
        more = int(st[1]) if st is not None else 0
        self._last[key] = [now, 0]
        self.log.warning("webhook %s: refused %d from %s: %s%s", hook, status, source, reason,
                         f" (and {more} more refused {status} since the last line)" if more else "",
                         extra={"HOOK": hook})
