"""The inotify engine: reads events in the loop, applies them to the watch table, and feeds the settle step.

One ``INotify`` fd for the whole service, registered with ``loop.add_reader``: no thread, no polling, nothing
runs while the trees are idle. A new directory is watched *and then scanned*, so files created before the
watch existed (``mkdir -p a/b/c && touch a/b/c/f``) are still reported.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator

from inotify_simple import INotify, flags

from .filters import WatchSpec
from .rescan import RESCAN_CTIME_SLACK_NS, Scanner, ctime_slack
from .settle import Emit, Settler
from .table import NO_CHILDREN, NO_FILES, NO_SPECS, Dir, Root, Spec, WatchTable, max_user_watches
from .table import isdir as is_dir

#: The longest an overflow rescan holds the loop at a time (it goes on in the next turn).
RESCAN_SLICE_S = 0.02

log = logging.getLogger("aiwg.watcher")

#: While the watch limit leaves directories unwatched, their subtrees are re-checked this often.
RECHECK_S = 2.0
#: After watches were freed (directories deleted), the unwatched ones are retried this soon.
FREED_RECHECK_S = 0.05
#: a status read asks for a re-check of unwatched subtrees no sooner than this (never inline)
HEALTH_RECHECK_S = 1.0
#: Clock slack for the ctime watermark of a re-check (coarse kernel timestamps).
RECHECK_CTIME_SLACK_NS = 20_000_000

#: Unpaired IN_MOVED_FROM waits this long for its IN_MOVED_TO (the pair can straddle two reads).
MOVE_PAIR_GRACE_S = 0.01

_F_CREATE = int(flags.CREATE)
_F_DELETE = int(flags.DELETE)
_F_CHANGE = int(flags.MODIFY | flags.CLOSE_WRITE | flags.ATTRIB)
_F_FROM = int(flags.MOVED_FROM)
_F_TO = int(flags.MOVED_TO)
_F_DELETE_SELF = int(flags.DELETE_SELF)
_F_MOVE_SELF = int(flags.MOVE_SELF)
_F_OVERFLOW = int(flags.Q_OVERFLOW)
_F_IGNORED = int(flags.IGNORED)
_F_ISDIR = int(flags.ISDIR)


class Away:
    """What an IN_MOVED_FROM took out of the view: a file, or a directory's files by suffix, and its watches."""

    __slots__ = ("isdir", "known", "path", "t", "tokens", "wds")

    def __init__(self, path: str, isdir: bool, known: bool, tokens: dict[str, list[tuple[Root, str | None]]],
                 wds: list[int]) -> None:
        self.path = path
        self.isdir = isdir
        self.known = known  # False: the view did not have it (stale event); nothing to report for it
        self.tokens = tokens  # file suffix below ``path`` ("" for a file) -> (root, content token) it left with
        self.wds = wds
        self.t = time.monotonic()


class FileWatcher:
    """Watches the ``watch.paths`` of many project roots and emits ``file.*`` events."""

    def __init__(self, emit: Emit, *, debounce_ms: int = 2000, batch_threshold: int = 50) -> None:
        self._roots: dict[str, Root] = {}
        self.table = WatchTable(on_renamed=self._report_gone, on_replaced=self._replaced)
        self.settle = Settler(emit, self._roots, debounce_ms=max(0, int(debounce_ms)),
                              batch_threshold=max(0, int(batch_threshold)))
        self.scan = Scanner(self.table, self._file_change,
                            lambda d: self._drop_tree(d, emit_deletes=True, rm=True))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._moves: dict[int, Away] = {}  # cookie -> what an IN_MOVED_FROM took out of the view, awaiting its pair
        self._move_timer: asyncio.TimerHandle | None = None
        self._last_read_ns = time.time_ns()
        self._recheck_timer: asyncio.TimerHandle | None = None
        self._recheck_ns = 0  # start of the previous re-check of unwatched directories (ctime watermark)
        #: walks running in slices, reading paused meanwhile: an overflow rescan, a big new tree's first walk
        self._walks: Iterator[None] | None = None
        self._slice_handle: asyncio.Handle | None = None
        self.walk_turns = 0  # loop turns the sliced walks took (a big tree takes many short ones)
        #: walk new trees in slices too (the service: a project of 20,000 dirs held the loop 650 ms); tests
        #: and tools that write right after ``set_root`` keep it off, so its walk is done when it returns
        self.slice_walks = False
        self.slice_s = RESCAN_SLICE_S
        self._activating: set[Spec] = set()

    # Tunables live in the settle step; these keep them where callers have always set them.
    @property
    def debounce_ms(self) -> int:
        return self.settle.debounce_ms

    @debounce_ms.setter
    def debounce_ms(self, v: int) -> None:
        self.settle.debounce_ms = max(0, int(v))

    @property
    def batch_threshold(self) -> int:
        return self.settle.batch_threshold

    @batch_threshold.setter
    def batch_threshold(self, v: int) -> None:
        self.settle.batch_threshold = max(0, int(v))

    @property
    def batch_cap(self) -> int:
        """Max paths listed in one ``file.batch`` (``count`` is always exact)."""
        return self.settle.batch_cap

    @batch_cap.setter
    def batch_cap(self, v: int) -> None:
        self.settle.batch_cap = v

    # Read-only views of the table, for tests and health.
    @property
    def _inotify(self) -> INotify | None:
        return self.table.inotify

    @property
    def _by_wd(self) -> dict[int, Dir]:
        return self.table.by_wd

    @property
    def _by_path(self) -> dict[str, Dir]:
        return self.table.by_path

    # ---------------------------------------------------------------- lifecycle / public API

    async def start(self) -> None:
        """Open the inotify fd and hook it into the running loop; activate configured roots."""
        if self.table.inotify is not None:
            return
        self._loop = self.settle.loop = asyncio.get_running_loop()
        inotify = self.table.open()
        self._last_read_ns = time.time_ns()
        self._loop.add_reader(inotify.fileno(), self._on_readable)
        for r in self._roots.values():
            if r.enabled:
                for s in r.specs.values():
                    self._activate(s, "baseline")
        self._log_limit()

    async def stop(self) -> None:
        """Remove the reader, close the fd, cancel timers. Pending changes are dropped, not flushed."""
        if self.table.inotify is None:
            return
        if self._loop is not None and self._walks is None:  # (a sliced walk under way removed it already)
            self._loop.remove_reader(self.table.inotify.fileno())
        for r in self._roots.values():
            self.settle.drop(r)
            for s in r.specs.values():
                s.dirs.clear()
                s.unwatched.clear()
                s.active = False
                s.wait_dir = None
        if self._move_timer is not None:
            self._move_timer.cancel()
            self._move_timer = None
        if self._recheck_timer is not None:
            self._recheck_timer.cancel()
            self._recheck_timer = None
        if self._slice_handle is not None:
            self._slice_handle.cancel()
            self._slice_handle = None
        self._walks = None
        self._activating.clear()
        self._moves.clear()
        self.table.close()

    def set_root(
        self, root: str, specs: list[WatchSpec], debounce_ms: int | None = None, enabled: bool = True
    ) -> None:
        """Add or reconfigure a root. Unchanged specs keep their watches; only the diff is applied."""
        path = os.path.abspath(root)
        r = self._roots.get(path)
        if r is None:
            r = self._roots[path] = Root(path)
        r.debounce_ms = None if debounce_ms is None else max(0, int(debounce_ms))
        wanted = list(dict.fromkeys(specs))
        for spec in list(r.specs):
            if spec not in wanted:
                self._deactivate(r.specs.pop(spec))
        new_specs: dict[WatchSpec, Spec] = {}
        for spec in wanted:
            s = r.specs.get(spec)
            if s is None:
                s = Spec(r, spec)
                if s.error:
                    log.warning("root %s: %s", path, s.error)
                    r.last_error = s.error
            new_specs[spec] = s
        r.specs = new_specs
        r.enabled = enabled
        if self.table.inotify is None:
            return  # applied by start()
        for s in new_specs.values():
            if s.error:
                continue
            if not enabled:
                self._deactivate(s)
            elif not s.active and s.wait_dir is None and s not in self._activating:
                if self.slice_walks and self._inside(s):
                    self._activating.add(s)
                    self._run_sliced(self._first_walk(s))
                else:
                    self._activate(s, "baseline")
        self._recheck()  # retry directories the watch limit refused (it may have been raised)
        self._log_limit()

    def remove_root(self, root: str) -> None:
        """Forget a root: drop its watches and pending changes without emitting anything."""
        r = self._roots.pop(os.path.abspath(root), None)
        if r is None:
            return
        for s in r.specs.values():
            self._deactivate(s)
        self.settle.drop(r)
        self._schedule_recheck(RECHECK_S)  # (cancels the re-check timer if nothing is unwatched now)

    def roots(self) -> list[str]:
        """The roots currently configured (watched or waiting)."""
        return list(self._roots)

    def health(self) -> dict:
        """Snapshot for ``aiwgctl status``: global fd state plus per-root counters.

        While the watch limit leaves directories unwatched, nothing tells us about directories made or
        removed inside them, so a snapshot asks for a re-check of those subtrees, within
        ``HEALTH_RECHECK_S``: never on the status path itself (status runs every heartbeat and task event,
        and a walk there blocked the loop and could emit events from a read).
        """
        if self._any_unwatched():
            self._schedule_recheck(HEALTH_RECHECK_S)
        roots: dict[str, dict] = {}
        for path, r in self._roots.items():
            dirs: set[Dir] = set()
            unwatched: set[Dir] = set()
            specs = []
            for s in r.specs.values():
                dirs |= s.dirs
                unwatched |= s.unwatched
                state = "error" if s.error else "active" if s.active else "waiting" if s.wait_dir else "idle"
                specs.append({"path": s.spec.path, "state": state, "error": s.error})
            last_error = r.last_error
            if unwatched:
                last_error = (
                    f"inotify watch limit reached: {len(unwatched)} directories under {path} are not "
                    f"watched (fs.inotify.max_user_watches={max_user_watches()}); raise it with "
                    "`sysctl fs.inotify.max_user_watches=<N>` and persist it in /etc/sysctl.d/"
                )
            roots[path] = {
                "enabled": r.enabled,
                "specs": specs,
                "watched_dirs": len(dirs),
                "unwatched_dirs": len(unwatched),
                "overflows": r.overflows,
                "rescans": r.rescans,
                "pending": len(r.pending) + (1 if self._walks is not None else 0),  # a sliced walk is pending work
                "events": dict(r.counts),
                "last_error": last_error,
            }
        return {"running": self.table.inotify is not None, "watches": len(self.table.by_wd), "roots": roots,
                "walking": self._walks is not None, "walk_turns": self.walk_turns}

    # ---------------------------------------------------------------- reader

    def _on_readable(self) -> None:
        inotify = self.table.inotify
        if inotify is None:
            return
        started = time.time_ns()
        since, self._last_read_ns = self._last_read_ns, started
        try:
            events = inotify.read(timeout=0)
        except BlockingIOError:
            return
        except OSError:
            log.exception("inotify read failed")
            return
        if events:
            try:
                self._process(events, since)
            except Exception:
                log.exception("watcher failed to process %d inotify events", len(events))

    def _inject_overflow(self) -> None:
        """Test hook: behave as if the kernel had reported IN_Q_OVERFLOW on the next read."""
        self._process([(-1, _F_OVERFLOW, 0, "")], self._last_read_ns)

    def _process(self, events: Iterable[tuple[int, int, int, str]], since_ns: int) -> None:
        """Dispatch raw events. ``since_ns``: start of the previous read (overflow watermark)."""
        self.settle.now = self._loop.time() if self._loop is not None else None
        try:
            if self._dispatch(events):
                self._overflow(since_ns)
        finally:
            self.settle.now = None

    def _dispatch(self, events: Iterable[tuple[int, int, int, str]]) -> bool:
        """Apply events to the view and the settle queues; True if the queue overflowed."""
        overflow = False
        by_wd = self.table.by_wd
        for wd, mask, cookie, name in events:
            if mask & _F_OVERFLOW:
                overflow = True
                continue
            d = by_wd.get(wd)
            if d is None:
                if mask & _F_TO and cookie in self._moves:  # landed somewhere we do not watch: gone, now
                    self._gone_away(self._moves.pop(cookie))
                continue
            if mask & _F_IGNORED:
                self._dir_gone(d)
                continue
            if mask & _F_MOVE_SELF:
                self._moved_self(d)
                continue
            if not name or mask & _F_DELETE_SELF:
                continue
            isdir = bool(mask & _F_ISDIR)
            if mask & _F_FROM:
                self._moves[cookie] = self._take_away(d, name, isdir)
            elif mask & _F_TO:
                away = self._moves.pop(cookie, None)
                if away is not None and away.known:
                    self._arrived(away, d, name)
                else:  # from outside, or a source the view did not have (a scan got there first)
                    self._appeared(d, name, isdir, moved_in=True)
            elif mask & _F_CREATE:
                self._appeared(d, name, isdir)
            elif mask & _F_DELETE:
                self._vanished(d, name, isdir)
            elif mask & _F_CHANGE and not isdir and d.owners and name in d.files:
                # a name the view does not have was created before its directory's watch and gone before the
                # scan: its changes are not news (it neither existed before nor exists now)
                self._file_change(d.owners, d.path, name, "modify")
        if self._moves and self._move_timer is None and self._loop is not None:
            self._move_timer = self._loop.call_later(MOVE_PAIR_GRACE_S, self._expire_moves)
        return overflow

    def _expire_moves(self) -> None:
        """An IN_MOVED_FROM without partner: the entry left the watched trees (= delete)."""
        self._move_timer = None
        limit = time.monotonic() - MOVE_PAIR_GRACE_S * 0.9
        for cookie, away in list(self._moves.items()):
            if away.t <= limit:
                del self._moves[cookie]
                self._gone_away(away)
        if self._moves and self._loop is not None:
            self._move_timer = self._loop.call_later(MOVE_PAIR_GRACE_S, self._expire_moves)

    def _take_away(self, d: Dir, name: str, isdir: bool) -> Away:
        """IN_MOVED_FROM: the name leaves the view and is gone from its path as of now (in event order).

        Its content tokens (per root, per file) wait for the IN_MOVED_TO; if none comes, nothing more is
        needed: leaving already counts as a delete.
        """
        path = f"{d.path}/{name}"
        if not isdir:
            if name not in d.files or self.table.by_wd.get(d.wd) is not d:
                return Away(path, False, False, {}, [])
            d.discard_file(name)
            return Away(path, False, True, {"": self._leave(d.owners, d.path, name)}, [])
        child = d.children.get(name)
        if child is None:
            return Away(path, True, False, {}, [])
        tokens: dict[str, list[tuple[Root, str | None]]] = {}
        wds: list[int] = []
        cut = len(path)
        stack = [child]
        while stack:
            x = stack.pop()
            stack.extend(x.children.values())
            wds.append(x.wd)
            if x.owners:
                prefix = x.path[cut:]
                for fname in x.files:
                    tokens[f"{prefix}/{fname}"] = self._leave(x.owners, x.path, fname)
        # Out of the table (the kernel keeps the watches): until it lands, events on it have no path.
        self._drop_tree(child, emit_deletes=False, rm=False)
        return Away(path, True, True, tokens, wds)

    def _leave(self, owners: Iterable[Spec], dpath: str, name: str) -> list[tuple[Root, str | None]]:
        return [(r, self.settle.leave(r, rel, specs))
                for r, (rel, specs) in self._accepting(owners, dpath, name).items()]

    def _land(self, tokens: list[tuple[Root, str | None]], owners: Iterable[Spec], dpath: str, name: str,
              replaced: bool) -> None:
        """Where a renamed file lands: a move in roots that saw it leave, a create (or replace) elsewhere."""
        left = dict(tokens)
        for r, (rel, specs) in self._accepting(owners, dpath, name).items():
            if r in left:
                self.settle.arrive(r, rel, specs, left[r], replaced)
            else:
                self.settle.enqueue(r, rel, "create", specs, replaced=replaced)

    def _gone_away(self, away: Away) -> None:
        """A rename did not land in a watched tree: release the kernel watches of a directory's tree."""
        freed = False
        for wd in away.wds:
            if wd >= 0 and wd not in self.table.by_wd:
                self.table.rm_watch(wd)
                freed = True
        if freed:
            self._watches_freed()

    # ---------------------------------------------------------------- event handlers

    def _known(self, d: Dir, name: str, isdir: bool) -> bool:
        """Is ``name`` in the view of the live directory ``d``? Events that contradict the view are stale."""
        if self.table.by_wd.get(d.wd) is not d:
            return False
        return name in d.children if isdir else name in d.files

    def _appeared(self, d: Dir, name: str, isdir: bool, moved_in: bool = False) -> None:
        if isdir and d.waiters:
            for s in [w for w in d.waiters if w.wait_name == name]:
                if s.wait_dir is d:
                    self._activate(s, "sync")
        if not d.owners:
            return
        path = f"{d.path}/{name}"
        if isdir:
            specs = [s for s in d.owners if not s.prunes(path, name)]
            if specs:
                self.scan.walk(specs, path, "sync")
                self._log_limit()
        elif name in d.files:
            # renamed onto an existing file: its content is replaced; a plain create the view already has
            # comes from a scan that saw the file before this queued event was read
            self._file_change(d.owners, d.path, name, "create" if moved_in else "modify", replaced=True)
        else:
            d.add_file(name)
            self._file_change(d.owners, d.path, name, "create")

    def _vanished(self, d: Dir, name: str, isdir: bool) -> None:
        if isdir:
            child = d.children.get(name)
            if child is not None:
                self._drop_tree(child, emit_deletes=True, rm=True)
        elif name in d.files:  # not in the view: a scan already saw it gone
            d.discard_file(name)
            if d.owners:
                self._file_change(d.owners, d.path, name, "delete")

    def _arrived(self, away: Away, d2: Dir, name2: str) -> None:
        """IN_MOVED_TO paired with a known source: moves (per file, for a directory's whole tree)."""
        if not away.isdir:
            replaced = name2 in d2.files
            if d2.owners:
                d2.add_file(name2)
            self._land(away.tokens[""], d2.owners, d2.path, name2, replaced)
            return
        new_path = f"{d2.path}/{name2}"
        for s in [w for w in d2.waiters if w.wait_name == name2]:
            if s.wait_dir is d2:
                self._activate(s, "sync")
        found: list[tuple[tuple[Spec, ...], str, str, str]] = []
        specs = [s for s in d2.owners if not s.prunes(new_path, name2)]
        if specs:  # the scan re-adds the kernel's watches (same wds) under the new names
            self.scan.walk(specs, new_path, "sync",
                           report=lambda o, dp, n, k: found.append((tuple(o), dp, n, k)))
        ncut = len(new_path)
        for owners, dpath, fname, kind in found:
            tokens = away.tokens.get(f"{dpath[ncut:]}/{fname}") if kind == "create" else None
            if tokens is not None:
                self._land(tokens, owners, dpath, fname, False)
            else:
                self._file_change(owners, dpath, fname, kind)
        self._gone_away(away)  # watches of subdirectories that did not come along
        self._log_limit()

    def _moved_self(self, d: Dir) -> None:
        """A spec's top directory was renamed away (inner dirs are handled via their parent)."""
        tops = [s for s in d.owners if s.abs == d.path]
        if not tops and not d.waiters:
            return
        try:
            st = os.lstat(d.path)
            if stat.S_ISDIR(st.st_mode) and st.st_ino == d.ino:
                return  # stale notification: we already track this inode at its current path
        except OSError:
            pass
        self._drop_tree(d, emit_deletes=True, rm=True)

    def _dir_gone(self, d: Dir) -> None:
        """IN_IGNORED: the kernel dropped the watch (directory deleted or unmounted)."""
        self._drop_tree(d, emit_deletes=True, rm=True)  # re-activates a spec whose top this was

    # ---------------------------------------------------------------- filters -> settle

    def _accepting(
        self, owners: Iterable[Spec], dpath: str, name: str
    ) -> dict[Root, tuple[str, tuple[Spec, ...]]]:
        """Per root: (rel path, specs that accept the file)."""
        path = f"{dpath}/{name}"
        out: dict[Root, tuple[str, tuple[Spec, ...]]] = {}
        for s in owners:
            if s.accepts_file(path, name):
                r = s.root
                prev = out.get(r)
                out[r] = (path[r.plen :], (*prev[1], s) if prev else (s,))
        return out

    def _file_change(self, owners: Iterable[Spec], dpath: str, name: str, kind: str,
                     replaced: bool = False) -> None:
        for r, (rel, specs) in self._accepting(owners, dpath, name).items():
            self.settle.enqueue(r, rel, kind, specs, replaced=replaced)

    def _replaced(self, d: Dir) -> None:
        """Another directory now lives at ``d.path`` (replaced while we were not looking): d's tree is gone.

        The path is being watched again right now, so a spec whose top it is stays active."""
        tops = [s for s in d.owners if s.abs == d.path]
        self._drop_tree(d, emit_deletes=True, rm=True, reactivate=False)
        for s in tops:
            s.active = True

    def _report_gone(self, d: Dir) -> None:
        """Every file the view knows in ``d`` is gone from its old path."""
        for name in d.files:
            self._file_change(d.owners, d.path, name, "delete")

    # ---------------------------------------------------------------- overflow

    def _overflow(self, since_ns: int) -> None:
        """The kernel queue overflowed and events were lost: rescan every root against the view.

        The walk runs in slices of at most ``RESCAN_SLICE_S`` (a tree of 100,000 files took a second), with
        the inotify fd not read meanwhile: the kernel queues what happens during it, applied once the view
        is whole again, so no event meets a half-refreshed view (and a second overflow means a second rescan).
        """
        for away in self._moves.values():  # left their old names for sure; the rescan finds where they went
            self._gone_away(away)
        self._moves.clear()
        roots = [r for r in self._roots.values() if r.enabled and r.specs]
        log.warning("inotify event queue overflowed; rescanning %d root(s)", len(roots))
        jobs: list[tuple[Root, Spec, int]] = []
        for r in roots:
            r.overflows += 1
            r.rescans += 1
            self.settle.emit(r, "file.rescan", {"reason": "overflow", "event_type": "rescan"})
            for s in list(r.specs.values()):
                if s.error or s in self._activating:  # (a first walk under way sees the tree as it is now)
                    continue
                if not s.active:
                    self._activate(s, "sync")
                    continue
                if not is_dir(s.abs):
                    for d in list(s.dirs):
                        if d in s.dirs:
                            self._drop_tree(d, emit_deletes=True, rm=True)
                    self._activate(s, "sync")
                    continue
                jobs.append((r, s, since_ns - ctime_slack(s.abs)))
        self._log_limit()
        if not jobs:
            return
        self._run_sliced(self._rescan_jobs(jobs))

    def _run_sliced(self, steps: Iterator[None]) -> None:
        """Run ``steps`` (walks that yield after each directory) in slices of ``slice_s``, the inotify fd not
        read until they are done; the first slice runs now (a small tree is done before this returns)."""
        if self._walks is not None:  # already walking: this one goes after
            self._walks = itertools.chain(self._walks, steps)
            return
        self._walks = steps
        inotify = self.table.inotify
        if self._loop is None or inotify is None:
            for _ in steps:
                pass
            self._walks = None
            return
        self._loop.remove_reader(inotify.fileno())
        self._walk_turn()

    def _rescan_jobs(self, jobs: list[tuple[Root, Spec, int]]) -> Iterator[None]:
        for r, s, watermark in jobs:
            visited: set[Dir] = set()
            for _ in self.scan.walk_steps([s], s.abs, "rescan", watermark, visited=visited):
                if self._roots.get(r.path) is not r or r.specs.get(s.spec) is not s or not s.active:
                    break  # its root was removed or reconfigured meanwhile: that did its own scan
                yield
            else:
                for d in list(s.dirs):
                    if d in s.dirs and d not in visited:
                        self._drop_tree(d, emit_deletes=True, rm=True)

    def _walk_turn(self) -> None:
        """One slice of the rescan; the next on the next loop turn, or reading resumes when it is done."""
        self._slice_handle = None
        gen = self._walks
        if gen is None:
            return
        self.walk_turns += 1
        until = time.perf_counter() + self.slice_s
        settle_now = self.settle.now
        self.settle.now = self._loop.time() if self._loop is not None else None
        try:
            for _ in gen:
                if time.perf_counter() > until:
                    assert self._loop is not None
                    self._slice_handle = self._loop.call_soon(self._walk_turn)
                    return
        finally:
            self.settle.now = settle_now
        self._walks = None
        self._log_limit()
        inotify = self.table.inotify
        if self._loop is not None and inotify is not None:
            self._last_read_ns = time.time_ns()  # what the kernel queued meanwhile is read next, not lost
            self._loop.add_reader(inotify.fileno(), self._on_readable)

    @property
    def walking(self) -> bool:
        """A sliced walk (rescan or first walk) is under way: events wait in the kernel until it is done."""
        return self._walks is not None

    def _first_walk(self, s: Spec) -> Iterator[None]:
        """``_activate(s, "baseline")`` for a tree that exists, in steps (``slice_walks``)."""
        r = s.root
        since = time.time_ns() - 10_000_000  # less a tick of the kernel's coarse clock
        try:
            for _ in self.scan.walk_steps([s], s.abs, "baseline", since):
                if self._roots.get(r.path) is not r or r.specs.get(s.spec) is not s or not r.enabled:
                    return  # removed or reconfigured meanwhile
                yield
        finally:
            self._activating.discard(s)
        top = self.table.by_path.get(s.abs)
        if top is not None and s in top.owners:
            s.active = True
        else:  # it moved or went while we walked: the usual way (wait for it, or walk it now)
            self._activate(s, "sync")
        self._recheck()
        self._log_limit()

    # ---------------------------------------------------------------- watches

    def _activate(self, s: Spec, mode: str) -> None:
        """Watch the spec's tree, or the nearest existing ancestor until the spec path appears."""
        self._clear_wait(s)
        if self.table.inotify is None or s.error:
            return
        for _ in range(32):  # re-check loop closes the race with a concurrent mkdir
            if is_dir(s.abs):
                real = os.path.realpath(s.abs)
                if real != s.root.path and not real.startswith(s.root.path.rstrip("/") + "/"):
                    # ``up -> ..`` with path ``up/.ssh``: the name is inside, the directory is not
                    s.error = s.root.last_error = (f"spec path {s.spec.path!r} leads outside the project root "
                                                   f"(to {real}); not watched")
                    log.warning("root %s: %s", s.root.path, s.error)
                    return
                self.scan.walk([s], s.abs, mode)
                top = self.table.by_path.get(s.abs)
                if top is not None and s in top.owners:
                    s.active = True
                    return
            s.active = False
            parent, child = os.path.split(s.abs)
            while parent != "/" and not is_dir(parent):
                parent, child = os.path.split(parent)
            d = self.table.register(parent, ())
            if d is None:
                s.root.last_error = f"cannot watch {parent} to wait for {s.abs}"
                return
            self.table.add_waiter(d, s)
            s.wait_dir, s.wait_name = d, child
            if not is_dir(os.path.join(parent, child)):
                return
            self._clear_wait(s)
            mode = "sync"

    @staticmethod
    def _inside(s: Spec) -> bool:
        """The spec's directory exists and is inside its root (else ``_activate`` says why, or waits)."""
        if not is_dir(s.abs):
            return False
        real = os.path.realpath(s.abs)
        return real == s.root.path or real.startswith(s.root.path.rstrip("/") + "/")

    def _clear_wait(self, s: Spec) -> None:
        d = s.wait_dir
        s.wait_dir = None
        if d is not None:
            self.table.remove_waiter(d, s)
            self.table.release(d)

    def _deactivate(self, s: Spec) -> None:
        """Remove one spec's watches (other specs sharing a directory keep it)."""
        self._clear_wait(s)
        for d in [*s.dirs, *s.unwatched]:
            self.table.disown(d, s)
            self.table.release(d)
        s.dirs.clear()
        s.unwatched.clear()
        s.active = False
        self.table.forget_spec(s)

    def _drop_tree(self, d: Dir, *, emit_deletes: bool, rm: bool, reactivate: bool = True) -> None:
        """Forget ``d`` and everything below it.

        Specs whose top directory or waiting point was inside are re-activated: watched again
        if the path exists (e.g. re-created), otherwise they wait on the nearest parent.
        """
        orphans: list[Spec] = []
        freed = False
        stack = [d]
        while stack:
            x = stack.pop()
            stack.extend(x.children.values())
            if emit_deletes and x.owners:
                for name in x.files:
                    self._file_change(x.owners, x.path, name, "delete")
            for s in x.owners:
                s.dirs.discard(x)
                s.unwatched.discard(x)
                if s.abs == x.path:
                    s.active = False
                    orphans.append(s)
            for s in x.waiters:
                s.wait_dir = None
                orphans.append(s)
            x.owners = NO_SPECS
            x.waiters = NO_SPECS
            x.files = NO_FILES
            if x.wd >= 0 and rm:
                freed = True
            self.table.unregister(x, rm)
            x.children = NO_CHILDREN
        if freed:
            self._watches_freed()
        if reactivate:
            for s in dict.fromkeys(orphans):
                if self._roots.get(s.root.path) is s.root and s.root.specs.get(s.spec) is s:
                    self._activate(s, "sync")

    def _log_limit(self) -> None:
        """Log the watch-limit problem once per root (health() keeps the live count); keep re-checking."""
        self._schedule_recheck(RECHECK_S)
        if not self.table.enospc_roots:
            return
        for r in self.table.enospc_roots:
            if r.limit_logged or self._roots.get(r.path) is not r:
                continue
            n = len(set().union(*(s.unwatched for s in r.specs.values())))
            if not n:
                r.limit_logged = False
                continue
            r.limit_logged = True
            log.warning(
                "inotify watch limit reached (fs.inotify.max_user_watches=%s): %d directories under %s "
                "are not watched; raise it with `sysctl fs.inotify.max_user_watches=<N>`",
                max_user_watches(),
                n,
                r.path,
            )
        self.table.enospc_roots.clear()

    # ---------------------------------------------------------------- the watch limit

    def _any_unwatched(self) -> bool:
        return any(s.unwatched for r in self._roots.values() for s in r.specs.values())

    def _schedule_recheck(self, delay: float) -> None:
        """Re-check unwatched subtrees after ``delay``: a timer that exists only while something is unwatched."""
        if self._loop is None or self.table.inotify is None or not self._any_unwatched():
            if self._recheck_timer is not None:  # nothing unwatched any more: no timer at all
                self._recheck_timer.cancel()
                self._recheck_timer = None
            return
        if self._recheck_timer is not None:
            if self._recheck_timer.when() <= self._loop.time() + delay:
                return
            self._recheck_timer.cancel()
        if not self._recheck_ns:
            self._recheck_ns = time.time_ns() - RESCAN_CTIME_SLACK_NS
        self._recheck_timer = self._loop.call_later(delay, self._recheck)

    def _watches_freed(self) -> None:
        """Watches went away (directories deleted): the unwatched ones may fit now."""
        self._schedule_recheck(FREED_RECHECK_S)

    def _recheck(self) -> None:
        """Walk every unwatched subtree: watch what now fits, and report what changed in it meanwhile.

        Creates and deletes come from the view; modifications from ctimes newer than the previous re-check.
        """
        if self._recheck_timer is not None:
            self._recheck_timer.cancel()
            self._recheck_timer = None
        if self.table.inotify is None:
            return
        tops: dict[Dir, None] = {}
        for r in self._roots.values():
            for s in r.specs.values():
                for d in s.unwatched:
                    parent = self.table.by_path.get(d.path.rsplit("/", 1)[0] or "/")
                    if parent is None or parent.wd >= 0 or s not in parent.owners:
                        tops[d] = None
        if not tops:
            self._recheck_ns = 0
            return
        started = time.time_ns()
        since = (self._recheck_ns or started) - RECHECK_CTIME_SLACK_NS
        self._recheck_ns = started
        for d in tops:
            if self.table.by_path.get(d.path) is not d or not d.owners:
                continue  # dropped by an earlier walk of this round
            before: list[Dir] = []
            stack = [d]
            while stack:
                x = stack.pop()
                before.append(x)
                stack.extend(x.children.values())
            visited = self.scan.walk(list(d.owners), d.path, "rescan", since)
            for x in before:
                if x not in visited and self.table.by_path.get(x.path) is x:
                    self._drop_tree(x, emit_deletes=True, rm=True)
        self._log_limit()
