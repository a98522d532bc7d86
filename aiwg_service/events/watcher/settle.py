"""Settle and batch: each changed path waits until it has been quiet for the debounce window, then goes out.

All paths of a root that settle in the same timer callback form one flush; a flush of more than
``batch_threshold`` paths becomes ``file.batch``. A root flushes at most once per window, which is what turns
a sustained storm into a few batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from .table import Root, Spec

log = logging.getLogger("aiwg.watcher")

Emit = Callable[[str, str, dict], None]

#: Default cap on the ``paths`` list of one ``file.batch`` event (``count`` stays exact).
BATCH_PATH_CAP = 1000
#: Loop timers have millisecond resolution; a path due within this much is due now.
_TIMER_SLOP_S = 0.002

# Coalescing table for one settle window: (pending kind, new kind) -> resulting kind (None = drop).
# create+delete drops the path entirely: it did not exist before the window and does not now.
MERGE: dict[tuple[str, str], str | None] = {
    ("create", "create"): "create",
    ("create", "modify"): "create",
    ("create", "delete"): None,
    ("modify", "create"): "modify",
    ("modify", "modify"): "modify",
    ("modify", "delete"): "delete",
    ("delete", "create"): "modify",  # replaced (e.g. atomic save via unlink + create)
    ("delete", "modify"): "modify",
    ("delete", "delete"): "delete",
}


class Pending:
    __slots__ = ("deadline", "from_rel", "kind", "specs")

    def __init__(self, kind: str, specs: tuple[Spec, ...], deadline: float, from_rel: str | None) -> None:
        self.kind = kind
        self.specs = specs
        self.deadline = deadline
        self.from_rel = from_rel


class Settler:
    """The settle windows of every root: coalesce, time, flush, and emit."""

    def __init__(self, emit: Emit, roots: dict[str, Root], *, debounce_ms: int, batch_threshold: int) -> None:
        self._emit_cb = emit
        self._roots = roots
        self.debounce_ms = debounce_ms
        self.batch_threshold = batch_threshold
        #: Max paths listed in one ``file.batch`` (``count`` is always exact).
        self.batch_cap = BATCH_PATH_CAP
        self.loop: asyncio.AbstractEventLoop | None = None
        #: One timestamp per inotify read: events that arrived together settle together.
        self.now: float | None = None

    def drop(self, r: Root) -> None:
        """Forget a root's pending changes without emitting them."""
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        r.pending.clear()

    def enqueue(
        self,
        r: Root,
        rel: str,
        kind: str,
        specs: tuple[Spec, ...],
        from_rel: str | None = None,
        replaced: bool = False,
    ) -> None:
        """Merge a change into the root's settle window (see ``MERGE``).

        ``replaced``: a rename landed on an existing file (atomic save), so a rename of a file
        created within the window is reported as ``modify`` of the target, not ``create``.
        """
        pend = r.pending
        prev = pend.pop(rel, None)
        if kind == "move":
            src = pend.pop(from_rel, None) if from_rel is not None else None
            if src is not None:
                if src.kind == "create":  # created and renamed within the window
                    kind, from_rel = ("modify" if replaced else "create"), None
                elif src.kind == "move":  # a -> b -> c collapses to a -> c
                    from_rel = src.from_rel
            if prev is not None and prev.kind == "delete" and kind == "create":
                kind = "modify"
        elif prev is not None:
            if prev.kind == "move":
                if kind == "delete":  # a -> b, then b deleted: net effect is "a deleted"
                    if prev.from_rel is not None:
                        self.enqueue(r, prev.from_rel, "delete", prev.specs)
                    return
                kind, from_rel = "move", prev.from_rel
            else:
                merged = MERGE[(prev.kind, kind)]
                if merged is None:
                    return
                kind = merged
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        loop = self.loop
        now = self.now if self.now is not None else loop.time() if loop is not None else 0.0
        pend[rel] = Pending(kind, specs, now + deb / 1000.0, from_rel)
        if r.timer is None and loop is not None:
            if deb == 0:
                r.timer = loop.call_soon(self.flush, r)
            else:
                self._arm(r, loop, now + deb / 1000.0, now, deb)

    def _arm(self, r: Root, loop: asyncio.AbstractEventLoop, due: float, now: float, deb: int) -> None:
        """Flush at ``due``, but at most once per debounce window per root.

        The rate limit is what turns a sustained storm into a few ``file.batch`` events: each
        flush delivers everything that settled since the previous one.
        """
        due = max(due, r.last_flush + deb / 1000.0)
        r.timer = loop.call_later(max(0.0, due - now), self.flush, r)

    def flush(self, r: Root) -> None:
        """Deliver every path of ``r`` that has been quiet for the debounce window."""
        r.timer = None
        pend = r.pending
        if not pend or self._roots.get(r.path) is not r:
            return
        loop = self.loop
        assert loop is not None
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        now = loop.time()
        ready: list[tuple[str, Pending]] = []
        if deb == 0:
            ready = list(pend.items())
            pend.clear()
        else:
            cutoff = now + _TIMER_SLOP_S
            while pend:
                rel = next(iter(pend))
                p = pend[rel]
                if p.deadline > cutoff:
                    break
                del pend[rel]
                ready.append((rel, p))
            if ready:
                r.last_flush = now
            if pend:
                self._arm(r, loop, pend[next(iter(pend))].deadline, now, deb)
        out: list[tuple[str, Pending, Spec]] = []
        for rel, p in ready:
            for s in p.specs:
                if s.allows(p.kind):
                    out.append((rel, p, s))
                    break
        if not out:
            return
        if len(out) > self.batch_threshold:
            self._emit_batch(r, out)
            return
        base = r.path
        for rel, p, s in out:
            data = {
                "path": rel,
                "abs_path": os.path.join(base, rel),
                "event_type": p.kind,
                "spec": s.spec.path,
            }
            if p.kind == "move":
                data["from_path"] = p.from_rel
                data["from_abs_path"] = os.path.join(base, p.from_rel or "")
            self.emit(r, "file." + p.kind, data)

    def _emit_batch(self, r: Root, out: list[tuple[str, Pending, Spec]]) -> None:
        kinds: dict[str, int] = {}
        paths: list[str] = []
        for rel, p, _ in out:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
            paths.append(rel)
            if p.kind == "move" and p.from_rel is not None:
                paths.append(p.from_rel)  # the old name is a changed path too
        cap = max(0, self.batch_cap)
        data = {
            "paths": paths[:cap],
            "count": len(paths),
            "kinds": kinds,
            "truncated": len(paths) > cap,
            "event_type": "batch",
        }
        self.emit(r, "file.batch", data)

    def emit(self, r: Root, etype: str, data: dict) -> None:
        r.counts[etype] = r.counts.get(etype, 0) + 1
        try:
            self._emit_cb(etype, r.path, data)
        except Exception:
            log.exception("emit(%s) for %s raised", etype, r.path)
