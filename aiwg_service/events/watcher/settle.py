"""Settle and batch: each changed path waits until it has been quiet for the debounce window, then goes out.

Within a window the engine's changes are folded into one net change per path, by tracking *contents*
rather than replaying kinds: each pending path knows whether it existed when the window opened
(``existed``), whether it exists now (``exists``), and which pre-window path its current content came
from (``origin``; ``None`` for content written inside the window). A rename moves an origin, an unlink or
an overwrite destroys one. At flush time that gives, with no special cases for chains or round trips:

* exists, origin elsewhere -> ``file.move`` (path <- origin);
* exists, origin itself or new content -> ``file.modify`` if it existed, else ``file.create``;
* gone, existed, its content not living elsewhere -> ``file.delete``; gone and never existed -> nothing.

So every path that existed before the window and not after gets a delete or a move-from, a rename round
trip is a modify, and no path that did not exist before or after is named. Paths linked by a move settle
together. All paths of a root that settle in the same timer callback form one flush; a flush of more than
``batch_threshold`` paths goes out as ``file.batch`` parts of at most ``batch_cap`` paths each, all with
the same ``flush`` id, so nothing is ever dropped from a listing. A root flushes at most once per window,
which is what turns a sustained storm into a few batches.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable

from .names import wire_name, wire_path
from .table import Root, Spec

log = logging.getLogger("aiwg.watcher")

Emit = Callable[[str, str, dict], None]

#: Default cap on the ``paths`` list of one ``file.batch`` part (a flush is split into as many parts as needed).
BATCH_PATH_CAP = 1000
#: Loop timers have millisecond resolution; a path due within this much is due now.
_TIMER_SLOP_S = 0.002


class Pending:
    """The net change of one path in the current window (see the module docstring)."""

    __slots__ = ("deadline", "existed", "exists", "origin", "specs")

    def __init__(self, existed: bool, specs: tuple[Spec, ...], rel: str) -> None:
        self.existed = existed
        self.exists = existed
        self.origin: str | None = rel if existed else None
        self.specs = specs
        self.deadline = 0.0


class Settler:
    """The settle windows of every root: fold changes, time them, flush, and emit."""

    def __init__(self, emit: Emit, roots: dict[str, Root], *, debounce_ms: int, batch_threshold: int) -> None:
        self._emit_cb = emit
        self._roots = roots
        self.debounce_ms = debounce_ms
        self.batch_threshold = batch_threshold
        #: Max paths listed in one ``file.batch`` part.
        self.batch_cap = BATCH_PATH_CAP
        self.loop: asyncio.AbstractEventLoop | None = None
        #: One timestamp per inotify read: events that arrived together settle together.
        self.now: float | None = None
        self._flush_ids = itertools.count(1)

    def drop(self, r: Root) -> None:
        """Forget a root's pending changes without emitting them."""
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        r.pending.clear()
        r.moved_to.clear()

    # ------------------------------------------------------------------ folding changes in

    def enqueue(self, r: Root, rel: str, kind: str, specs: tuple[Spec, ...], replaced: bool = False) -> None:
        """Fold one change into the root's window (renames go through ``leave`` and ``arrive``).

        ``create``: the path appears (``replaced``: it already existed and its content is destroyed, e.g. a
        rename from outside onto it). ``modify``: its content changed in place. ``delete``: it is gone.
        """
        deadline, _now, _deb = self._clock(r)
        if kind == "delete":
            p = self._entry(r, rel, True, specs, deadline)
            if p.exists:
                self._destroy(r, rel, p)
            p.exists = False
        elif kind == "create":
            p = self._entry(r, rel, replaced, specs, deadline)
            if p.exists:
                self._destroy(r, rel, p)
            p.exists = True
        else:  # modify
            p = self._entry(r, rel, True, specs, deadline)
            p.exists = True
        self._arm_for(r)

    def leave(self, r: Root, rel: str, specs: tuple[Spec, ...]) -> str | None:
        """A rename took the file at ``rel`` away (IN_MOVED_FROM): it is gone from ``rel`` as of now.

        Returns its content token (the pre-window path it came from), to hand to ``arrive`` if the rename
        lands in a watched tree; if it never does, the content is simply destroyed (a delete).
        """
        deadline, _now, _deb = self._clock(r)
        p = self._entry(r, rel, True, specs, deadline)
        content = p.origin if p.exists else None
        if content is not None and content != rel and r.moved_to.get(content) == rel:
            del r.moved_to[content]
        p.exists, p.origin = False, None
        self._arm_for(r)
        return content

    def arrive(self, r: Root, rel: str, specs: tuple[Spec, ...], content: str | None, replaced: bool) -> None:
        """The other end of ``leave``: the content ``content`` lands at ``rel`` (IN_MOVED_TO)."""
        deadline, _now, _deb = self._clock(r)
        if content is not None:
            src = r.pending.get(content)
            if src is None or content in r.moved_to:
                content = None  # its window closed meanwhile (reported gone): it arrives as new content
        dst = self._entry(r, rel, replaced, specs, deadline)
        if dst.exists:
            self._destroy(r, rel, dst)
        dst.exists, dst.origin = True, content
        if content is not None:
            if content == rel:
                r.moved_to.pop(rel, None)
            else:
                r.moved_to[content] = rel
                r.pending[content].deadline = deadline  # both ends settle together
        self._arm_for(r)

    def _clock(self, r: Root) -> tuple[float, float, int]:
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        loop = self.loop
        now = self.now if self.now is not None else loop.time() if loop is not None else 0.0
        return now + deb / 1000.0, now, deb

    def _arm_for(self, r: Root) -> None:
        loop = self.loop
        if r.timer is None and loop is not None:
            deadline, now, deb = self._clock(r)
            if deb == 0:
                r.timer = loop.call_soon(self.flush, r)
            else:
                self._arm(r, loop, deadline, now, deb)

    @staticmethod
    def _entry(r: Root, rel: str, existed: bool, specs: tuple[Spec, ...] | None, deadline: float) -> Pending:
        """The path's pending entry, moved to the end of the window order with a fresh deadline."""
        p = r.pending.pop(rel, None)
        if p is None:
            p = Pending(existed, specs or (), rel)
        elif specs:
            p.specs = specs
        p.deadline = deadline
        r.pending[rel] = p
        return p

    @staticmethod
    def _destroy(r: Root, rel: str, p: Pending) -> None:
        """The content now at ``rel`` is overwritten or unlinked: its origin no longer lives anywhere."""
        if p.origin is not None and p.origin != rel and r.moved_to.get(p.origin) == rel:
            del r.moved_to[p.origin]
        p.origin = None

    # ------------------------------------------------------------------ timing

    def _arm(self, r: Root, loop: asyncio.AbstractEventLoop, due: float, now: float, deb: int) -> None:
        """Flush at ``due``, but at most once per debounce window per root."""
        due = max(due, r.last_flush + deb / 1000.0)
        r.timer = loop.call_later(max(0.0, due - now), self.flush, r)

    def flush(self, r: Root) -> None:
        """Deliver every path of ``r`` that has been quiet for the debounce window (and the paths linked to it)."""
        r.timer = None
        pend = r.pending
        if not pend or self._roots.get(r.path) is not r:
            return
        loop = self.loop
        assert loop is not None
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        now = loop.time()
        ready: dict[str, Pending] = {}
        if deb == 0:
            ready = dict(pend)
            pend.clear()
        else:
            cutoff = now + _TIMER_SLOP_S
            while pend:
                rel = next(iter(pend))
                p = pend[rel]
                if p.deadline > cutoff:
                    break
                del pend[rel]
                ready[rel] = p
            if ready:
                r.last_flush = now
            self._close_links(r, ready)
            if pend:
                self._arm(r, loop, pend[next(iter(pend))].deadline, now, deb)
        for rel, p in ready.items():
            if p.origin is not None and p.origin != rel and r.moved_to.get(p.origin) == rel:
                del r.moved_to[p.origin]
        if not pend:
            r.moved_to.clear()
        self._deliver(r, self._net(ready))

    @staticmethod
    def _close_links(r: Root, ready: dict[str, Pending]) -> None:
        """Pull in every pending path linked to a ready one by a move, so both ends go out together."""
        pend = r.pending
        stack = list(ready)
        while stack:
            rel = stack.pop()
            p = ready[rel]
            for other in (p.origin, r.moved_to.get(rel)):
                if other is not None and other != rel and other not in ready and other in pend:
                    ready[other] = pend.pop(other)
                    stack.append(other)

    @staticmethod
    def _net(ready: dict[str, Pending]) -> list[tuple[str, str, str | None, tuple[Spec, ...]]]:
        """(kind, path, from_path, specs) per reported path: moves first, then creates/modifies, then deletes."""
        moves: list[tuple[str, str, str | None, tuple[Spec, ...]]] = []
        rest: list[tuple[str, str, str | None, tuple[Spec, ...]]] = []
        deletes: list[tuple[str, str, str | None, tuple[Spec, ...]]] = []
        moved_away: set[str] = set()
        for rel, p in ready.items():
            if p.exists and p.origin is not None and p.origin != rel:
                moved_away.add(p.origin)
                moves.append(("move", rel, p.origin, p.specs))
        for rel, p in ready.items():
            if p.exists:
                if p.origin is None:
                    rest.append(("modify" if p.existed else "create", rel, None, p.specs))
                elif p.origin == rel:
                    rest.append(("modify", rel, None, p.specs))
            elif p.existed and rel not in moved_away:
                deletes.append(("delete", rel, None, p.specs))
        return moves + rest + deletes

    # ------------------------------------------------------------------ emitting

    def _deliver(self, r: Root, changes: list[tuple[str, str, str | None, tuple[Spec, ...]]]) -> None:
        out: list[tuple[str, str, str | None, Spec]] = []
        for kind, rel, from_rel, specs in changes:
            for s in specs:
                if s.allows(kind):
                    out.append((kind, rel, from_rel, s))
                    break
        if not out:
            return
        if len(out) > self.batch_threshold:
            self._emit_batch(r, out)
            return
        base = r.path
        for kind, rel, from_rel, s in out:
            data: dict = {"event_type": kind, "spec": s.spec.path}
            wire_path(data, "path", rel)
            wire_path(data, "abs_path", os.path.join(base, rel))
            if kind == "move" and from_rel is not None:
                wire_path(data, "from_path", from_rel)
                wire_path(data, "from_abs_path", os.path.join(base, from_rel))
            self.emit(r, "file." + kind, data)

    def _emit_batch(self, r: Root, out: list[tuple[str, str, str | None, Spec]]) -> None:
        """One flush as ``file.batch`` parts: every path named, each part at most ``batch_cap`` paths."""
        kinds: dict[str, int] = {}
        entries: list[tuple[str, str]] = []  # (path, what happened to it)
        for kind, rel, from_rel, _ in out:
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "move" and from_rel is not None:
                entries.append((from_rel, "move_from"))  # the old name is a changed path too
                entries.append((rel, "move_to"))
            else:
                entries.append((rel, kind))
        cap = max(2, self.batch_cap)
        parts: list[list[tuple[str, str]]] = []
        i = 0
        while i < len(entries):
            j = min(len(entries), i + cap)
            if j < len(entries) and entries[j - 1][1] == "move_from":
                j -= 1  # keep a move's two names in one part
            parts.append(entries[i:j])
            i = j
        flush_id = next(self._flush_ids)
        for n, part in enumerate(parts, 1):
            data: dict = {
                "paths": [],
                "path_kinds": [k for _, k in part],
                "count": len(entries),
                "kinds": kinds,
                "truncated": False,
                "flush": flush_id,
                "part": n,
                "parts": len(parts),
                "event_type": "batch",
            }
            b64: list[str | None] = []
            for rel, _ in part:
                shown, raw = wire_name(rel)
                data["paths"].append(shown)
                b64.append(raw)
            if any(b64):
                data["paths_b64"] = b64
            self.emit(r, "file.batch", data)

    def emit(self, r: Root, etype: str, data: dict) -> None:
        r.counts[etype] = r.counts.get(etype, 0) + 1
        try:
            self._emit_cb(etype, r.path, data)
        except Exception:
            log.exception("emit(%s) for %s raised", etype, r.path)

