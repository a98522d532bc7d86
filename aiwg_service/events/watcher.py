"""inotify file-watching engine: many project roots, one inotify fd, driven by the asyncio loop.

Design notes (why it looks the way it does):

* One ``INotify`` fd for the whole service, registered with ``loop.add_reader``: no thread, no
  polling, nothing runs while the trees are idle.
* inotify is not recursive, so every directory below a spec path gets its own watch. A new
  directory is watched *and then scanned*, so files created before the watch existed
  (``mkdir -p a/b/c && touch a/b/c/f``) are still reported.
* The engine keeps a small view of each watched directory: its watch descriptor and the names of
  the non-directory entries. Memory is O(watched entries), never O(events). The view lets a
  rescan after a queue overflow report creates, deletes and (via ctime) modifications exactly.
* Debounce is a per-path settle window: a path is delivered once it has been quiet for
  ``debounce_ms``; all paths that settle in the same timer callback of a root form one flush,
  and a flush of more than ``batch_threshold`` paths becomes a single ``file.batch`` event.

Semantics (the contract the event bus relies on):

* Coalescing inside one window, per path: create+modify -> create; modify+delete -> delete;
  create+delete -> nothing (the path neither existed before nor exists now); delete+create ->
  modify (replaced); a rename of a file created in the window -> create of the new name (modify
  if it replaced an existing file: atomic save); a->b->c -> one move a->c; move then delete of
  the new name -> delete of the old name. Directories are watched, never reported themselves.
* A root flushes at most once per debounce window, so a sustained storm becomes one batch per
  window; latency for a single path is debounce_ms (at most 2x under load). ``debounce_ms=0``
  delivers on the next loop iteration, coalescing only what arrived in the same read.
* ``file.batch``: ``paths`` holds at most ``batch_cap`` (default 1,000) entries, ``count`` is
  exact, ``truncated`` tells whether the list was cut; moves list both names.
* Overflow (IN_Q_OVERFLOW): ``file.rescan {"reason": "overflow"}`` for every root, then every
  tree is walked against the view: new names -> create, missing names -> delete, files whose
  ctime is not older than the start of the previous read (minus 1 s slack) -> modify. Lost
  events happened after that read, so no change is lost; a few recent files may be reported
  twice. Memory stays O(watched entries).
* Watch limit (ENOSPC): counted per root as ``unwatched_dirs``, explained in health()
  ``last_error`` with the sysctl to raise, logged once per root, retried on set_root/rescan.
  Files in unwatched directories are still reported when the directory is first scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inotify_simple import INotify, flags

__all__ = ["BATCH_PATH_CAP", "Emit", "FileWatcher", "IgnoreMatcher", "WatchSpec"]

log = logging.getLogger("aiwg.watcher")

Emit = Callable[[str, str, dict], None]

#: Default cap on the ``paths`` list of one ``file.batch`` event (``count`` stays exact).
BATCH_PATH_CAP = 1000
#: Unpaired IN_MOVED_FROM waits this long for its IN_MOVED_TO (the pair can straddle two reads).
MOVE_PAIR_GRACE_S = 0.01
#: After an overflow, files whose ctime is newer than (last clean read - slack) count as modified.
#: The slack covers the coarse kernel timestamp clock and filesystems with 1 s timestamps.
RESCAN_CTIME_SLACK_NS = 1_000_000_000
#: Loop timers have millisecond resolution; a path due within this much is due now.
_TIMER_SLOP_S = 0.002

_KINDS = ("create", "modify", "delete")
_AUTO_IGNORE_DIRS = frozenset({".git", "node_modules", "__pycache__"})
_AUTO_IGNORE_FILES = frozenset({".git", "4913"})  # .git is a file in worktrees/submodules
_AUTO_IGNORE_SUFFIXES = (".swp", ".swo", ".swx", "~")
_DAEMON_STATE = ".aiwg/daemon"

_MASK = (
    flags.CREATE
    | flags.DELETE
    | flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.DONT_FOLLOW
    | flags.ONLYDIR
    | flags.EXCL_UNLINK
)
_F_CREATE = int(flags.CREATE)
_F_DELETE = int(flags.DELETE)
_F_CHANGE = int(flags.MODIFY | flags.CLOSE_WRITE)
_F_FROM = int(flags.MOVED_FROM)
_F_TO = int(flags.MOVED_TO)
_F_DELETE_SELF = int(flags.DELETE_SELF)
_F_MOVE_SELF = int(flags.MOVE_SELF)
_F_OVERFLOW = int(flags.Q_OVERFLOW)
_F_IGNORED = int(flags.IGNORED)
_F_ISDIR = int(flags.ISDIR)

# Coalescing table for one settle window: (pending kind, new kind) -> resulting kind (None = drop).
# create+delete drops the path entirely: it did not exist before the window and does not now.
_MERGE: dict[tuple[str, str], str | None] = {
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


@dataclass(frozen=True)
class WatchSpec:
    """One entry of a project's ``watch.paths`` config."""

    path: str
    events: tuple[str, ...] = ("create", "modify", "delete")
    extensions: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# gitignore-style matcher
# --------------------------------------------------------------------------------------------


def _glob_to_regex(pat: str) -> str:
    """Translate one glob (no leading/trailing slash) to a regex; ``*`` never crosses ``/``."""
    out: list[str] = []
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            whole_segment = (i == 0 or pat[i - 1] == "/") and (i + 2 == n or pat[i + 2] == "/")
            if whole_segment and pat.startswith("**", i):
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                else:
                    out.append("(?:.*/)?")
                    i += 3
                continue
            while i < n and pat[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pat[j] in "!^":
                j += 1
            if j < n and pat[j] == "]":
                j += 1
            while j < n and pat[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append("[" + ("^" if neg else "") + body + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class IgnoreMatcher:
    """gitignore-style globs, compiled once.

    Supported: ``*``/``?``/``[...]``, ``**`` segments, trailing ``/`` (directories only), a
    pattern without an inner ``/`` matches the basename at any depth, a pattern with one is
    anchored to the spec path, ``!`` re-includes (last match wins). As in git, a file below an
    ignored directory cannot be re-included (ignored directories are not even watched).
    ``dir/**`` also prunes ``dir`` itself, since every entry below it is ignored.
    """

    __slots__ = ("_any", "_dirs", "_rules")

    def __init__(self, patterns: Iterable[str]) -> None:
        rules: list[tuple[re.Pattern[str], bool, bool]] = []
        for raw in patterns:
            p = raw.strip()
            if not p or p.startswith("#"):
                continue
            neg = p.startswith("!")
            if neg:
                p = p[1:]
            dir_only = p.endswith("/")
            p = p.rstrip("/")
            anchored = "/" in p
            p = p.lstrip("/")
            if not p:
                continue
            prefix = "" if anchored else "(?:.*/)?"
            rules.append((re.compile(prefix + _glob_to_regex(p)), neg, dir_only))
            if p.endswith("/**") and not neg and len(p) > 3:
                rules.append((re.compile(prefix + _glob_to_regex(p[:-3])), False, True))
        self._rules = rules
        self._any: re.Pattern[str] | None = None
        self._dirs: re.Pattern[str] | None = None
        if rules and not any(neg for _, neg, _ in rules):
            # Fast path: one alternation per kind, a single fullmatch per lookup.
            files = [r.pattern for r, _, d in rules if not d]
            self._any = re.compile("|".join(f"(?:{p})" for p in files)) if files else re.compile(r"(?!)")
            self._dirs = re.compile("|".join(f"(?:{r.pattern})" for r, _, _ in rules))

    def __bool__(self) -> bool:
        return bool(self._rules)

    def match(self, rel: str, is_dir: bool) -> bool:
        """True if ``rel`` (relative to the spec path, ``/``-separated) is ignored."""
        if self._dirs is not None:
            rx = self._dirs if is_dir else self._any
            return rx.fullmatch(rel) is not None  # type: ignore[union-attr]
        for rx, neg, dir_only in reversed(self._rules):
            if dir_only and not is_dir:
                continue
            if rx.fullmatch(rel) is not None:
                return not neg
        return False


# --------------------------------------------------------------------------------------------
# internal state
# --------------------------------------------------------------------------------------------


class _Root:
    __slots__ = (
        "counts",
        "daemon_dir",
        "debounce_ms",
        "enabled",
        "last_error",
        "last_flush",
        "limit_logged",
        "overflows",
        "path",
        "pending",
        "plen",
        "rescans",
        "specs",
        "timer",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self.plen = len(path) + (0 if path.endswith("/") else 1)
        self.daemon_dir = os.path.join(path, _DAEMON_STATE)
        self.specs: dict[WatchSpec, _Spec] = {}
        self.debounce_ms: int | None = None
        self.enabled = True
        self.pending: dict[str, _Pending] = {}  # rel path -> change; ordered by last touch
        self.timer: asyncio.Handle | None = None
        self.last_flush = float("-inf")  # loop time of the last flush that delivered something
        self.counts: dict[str, int] = {}
        self.overflows = 0
        self.rescans = 0
        self.last_error: str | None = None
        self.limit_logged = False


class _Spec:
    __slots__ = (
        "abs",
        "active",
        "dirs",
        "error",
        "events",
        "exts",
        "matcher",
        "plen",
        "root",
        "spec",
        "unwatched",
        "wait_dir",
        "wait_name",
    )

    def __init__(self, root: _Root, spec: WatchSpec) -> None:
        self.root = root
        self.spec = spec
        self.error: str | None = None
        rel = os.path.normpath(spec.path.strip() or ".")
        if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            self.error = f"spec path {spec.path!r} is outside the project root"
        self.abs = root.path if rel == "." else os.path.join(root.path, rel)
        self.plen = len(self.abs) + (0 if self.abs.endswith("/") else 1)
        self.events = frozenset(e for e in spec.events if e in _KINDS)
        self.exts = tuple(e if e.startswith(".") else "." + e for e in spec.extensions if e)
        self.matcher = IgnoreMatcher(spec.ignore)
        self.dirs: set[_Dir] = set()
        self.unwatched: set[str] = set()
        self.active = False
        self.wait_dir: _Dir | None = None
        self.wait_name = ""

    def prunes(self, path: str, name: str) -> bool:
        """Directories that are neither watched nor descended into."""
        if name in _AUTO_IGNORE_DIRS or path == self.root.daemon_dir:
            return True
        return bool(self.matcher) and self.matcher.match(path[self.plen :], True)

    def accepts_file(self, path: str, name: str) -> bool:
        if name in _AUTO_IGNORE_FILES or name.endswith(_AUTO_IGNORE_SUFFIXES) or name.startswith(".#"):
            return False
        if self.exts and not name.endswith(self.exts):
            return False
        return not (self.matcher and self.matcher.match(path[self.plen :], False))

    def allows(self, kind: str) -> bool:
        if kind == "move":
            return "create" in self.events or "delete" in self.events
        return kind in self.events


class _Dir:
    __slots__ = ("children", "files", "ino", "owners", "path", "waiters", "wd")

    def __init__(self, wd: int, path: str) -> None:
        self.wd = wd
        self.path = path
        self.ino = 0
        self.owners: set[_Spec] = set()  # specs whose tree includes this directory
        self.waiters: set[_Spec] = set()  # specs waiting for a child of this directory to appear
        self.files: set[str] = set()  # names of non-directory entries (the view)
        self.children: dict[str, _Dir] = {}


class _Pending:
    __slots__ = ("deadline", "from_rel", "kind", "specs")

    def __init__(self, kind: str, specs: tuple[_Spec, ...], deadline: float, from_rel: str | None) -> None:
        self.kind = kind
        self.specs = specs
        self.deadline = deadline
        self.from_rel = from_rel


def _isdir(path: str) -> bool:
    """A real directory (symlinks are never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _max_user_watches() -> str:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return f.read().strip()
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------


class FileWatcher:
    """Watches the ``watch.paths`` of many project roots and emits ``file.*`` events."""

    def __init__(self, emit: Emit, *, debounce_ms: int = 2000, batch_threshold: int = 50) -> None:
        self._emit_cb = emit
        self.debounce_ms = max(0, int(debounce_ms))
        self.batch_threshold = max(0, int(batch_threshold))
        #: Max paths listed in one ``file.batch`` (``count`` is always exact). Tunable per instance.
        self.batch_cap = BATCH_PATH_CAP
        self._roots: dict[str, _Root] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inotify: INotify | None = None
        self._by_wd: dict[int, _Dir] = {}
        self._by_path: dict[str, _Dir] = {}
        self._moves: dict[int, tuple[_Dir, str, bool, float]] = {}
        self._move_timer: asyncio.TimerHandle | None = None
        self._last_read_ns = time.time_ns()
        self._enospc_roots: set[_Root] = set()
        # One timestamp per inotify read: events that arrived together settle together.
        self._now: float | None = None

    # ---------------------------------------------------------------- lifecycle / public API

    async def start(self) -> None:
        """Open the inotify fd and hook it into the running loop; activate configured roots."""
        if self._inotify is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._inotify = INotify(nonblocking=True)
        self._last_read_ns = time.time_ns()
        self._loop.add_reader(self._inotify.fileno(), self._on_readable)
        for r in self._roots.values():
            if r.enabled:
                for s in r.specs.values():
                    self._activate(s, "baseline")
        self._log_limit()

    async def stop(self) -> None:
        """Remove the reader, close the fd, cancel timers. Pending changes are dropped, not flushed."""
        if self._inotify is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fileno())
        for r in self._roots.values():
            if r.timer is not None:
                r.timer.cancel()
                r.timer = None
            r.pending.clear()
            for s in r.specs.values():
                s.dirs.clear()
                s.unwatched.clear()
                s.active = False
                s.wait_dir = None
        if self._move_timer is not None:
            self._move_timer.cancel()
            self._move_timer = None
        self._moves.clear()
        self._by_wd.clear()
        self._by_path.clear()
        self._inotify.close()
        self._inotify = None

    def set_root(
        self, root: str, specs: list[WatchSpec], debounce_ms: int | None = None, enabled: bool = True
    ) -> None:
        """Add or reconfigure a root. Unchanged specs keep their watches; only the diff is applied."""
        path = os.path.abspath(root)
        r = self._roots.get(path)
        if r is None:
            r = self._roots[path] = _Root(path)
        r.debounce_ms = None if debounce_ms is None else max(0, int(debounce_ms))
        wanted = list(dict.fromkeys(specs))
        for spec in list(r.specs):
            if spec not in wanted:
                self._deactivate(r.specs.pop(spec))
        new_specs: dict[WatchSpec, _Spec] = {}
        for spec in wanted:
            s = r.specs.get(spec)
            if s is None:
                s = _Spec(r, spec)
                if s.error:
                    log.warning("root %s: %s", path, s.error)
                    r.last_error = s.error
            new_specs[spec] = s
        r.specs = new_specs
        r.enabled = enabled
        if self._inotify is None:
            return  # applied by start()
        for s in new_specs.values():
            if s.error:
                continue
            if not enabled:
                self._deactivate(s)
            elif not s.active and s.wait_dir is None:
                self._activate(s, "baseline")
            elif s.unwatched:
                self._walk([s], s.abs, "sync")  # retry directories refused earlier (watch limit)
        self._log_limit()

    def remove_root(self, root: str) -> None:
        """Forget a root: drop its watches and pending changes without emitting anything."""
        r = self._roots.pop(os.path.abspath(root), None)
        if r is None:
            return
        for s in r.specs.values():
            self._deactivate(s)
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        r.pending.clear()

    def health(self) -> dict:
        """Snapshot for ``aiwgctl status``: global fd state plus per-root counters."""
        roots: dict[str, dict] = {}
        for path, r in self._roots.items():
            dirs: set[_Dir] = set()
            unwatched: set[str] = set()
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
                    f"watched (fs.inotify.max_user_watches={_max_user_watches()}); raise it with "
                    "`sysctl fs.inotify.max_user_watches=<N>` and persist it in /etc/sysctl.d/"
                )
            roots[path] = {
                "enabled": r.enabled,
                "specs": specs,
                "watched_dirs": len(dirs),
                "unwatched_dirs": len(unwatched),
                "overflows": r.overflows,
                "rescans": r.rescans,
                "pending": len(r.pending),
                "events": dict(r.counts),
                "last_error": last_error,
            }
        return {"running": self._inotify is not None, "watches": len(self._by_wd), "roots": roots}

    # ---------------------------------------------------------------- reader

    def _on_readable(self) -> None:
        inotify = self._inotify
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
        self._now = self._loop.time() if self._loop is not None else None
        try:
            if self._dispatch(events):
                self._overflow(since_ns)
        finally:
            self._now = None

    def _dispatch(self, events: Iterable[tuple[int, int, int, str]]) -> bool:
        """Apply events to the view and the settle queues; True if the queue overflowed."""
        overflow = False
        by_wd = self._by_wd
        for wd, mask, cookie, name in events:
            if mask & _F_OVERFLOW:
                overflow = True
                continue
            d = by_wd.get(wd)
            if d is None:
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
                self._moves[cookie] = (d, name, isdir, time.monotonic())
            elif mask & _F_TO:
                src = self._moves.pop(cookie, None)
                if src is not None and by_wd.get(src[0].wd) is src[0]:
                    self._moved(src[0], src[1], d, name, isdir)
                else:
                    self._appeared(d, name, isdir)
            elif mask & _F_CREATE:
                self._appeared(d, name, isdir)
            elif mask & _F_DELETE:
                self._vanished(d, name, isdir)
            elif mask & _F_CHANGE and not isdir and d.owners:
                self._file_change(d.owners, d.path, name, "modify")
        if self._moves and self._move_timer is None and self._loop is not None:
            self._move_timer = self._loop.call_later(MOVE_PAIR_GRACE_S, self._expire_moves)
        return overflow

    def _expire_moves(self) -> None:
        """An IN_MOVED_FROM without partner: the entry left the watched trees (= delete)."""
        self._move_timer = None
        limit = time.monotonic() - MOVE_PAIR_GRACE_S * 0.9
        for cookie, (d, name, isdir, t) in list(self._moves.items()):
            if t <= limit:
                del self._moves[cookie]
                if self._by_wd.get(d.wd) is d:
                    self._vanished(d, name, isdir)
        if self._moves and self._loop is not None:
            self._move_timer = self._loop.call_later(MOVE_PAIR_GRACE_S, self._expire_moves)

    # ---------------------------------------------------------------- event handlers

    def _appeared(self, d: _Dir, name: str, isdir: bool) -> None:
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
                self._walk(specs, path, "sync")
                self._log_limit()
        else:
            kind = "modify" if name in d.files else "create"
            d.files.add(name)
            self._file_change(d.owners, d.path, name, kind)

    def _vanished(self, d: _Dir, name: str, isdir: bool) -> None:
        if isdir:
            child = d.children.get(name)
            if child is not None:
                self._drop_tree(child, emit_deletes=True, rm=True)
        else:
            d.files.discard(name)
            if d.owners:
                self._file_change(d.owners, d.path, name, "delete")

    def _moved(self, d1: _Dir, name1: str, d2: _Dir, name2: str, isdir: bool) -> None:
        """A rename with both ends in watched directories."""
        if not isdir:
            d1.files.discard(name1)
            src = self._accepting(d1.owners, d1.path, name1)
            existed = name2 in d2.files
            if d2.owners:
                d2.files.add(name2)
            dst = self._accepting(d2.owners, d2.path, name2)
            for r, (rel, specs) in dst.items():
                if r in src:
                    self._enqueue(r, rel, "move", specs, src[r][0], replaced=existed)
                else:
                    self._enqueue(r, rel, "modify" if existed else "create", specs)
            for r, (rel, specs) in src.items():
                if r not in dst:
                    self._enqueue(r, rel, "delete", specs)
            return
        old_path, new_path = f"{d1.path}/{name1}", f"{d2.path}/{name2}"
        old_rels: dict[_Root, list[tuple[str, tuple[_Spec, ...]]]] = {}
        old_wds: list[int] = []
        child = d1.children.get(name1)
        if child is not None:
            stack = [child]
            while stack:
                x = stack.pop()
                stack.extend(x.children.values())
                old_wds.append(x.wd)
                for fname in x.files:
                    for r, entry in self._accepting(x.owners, x.path, fname).items():
                        old_rels.setdefault(r, []).append(entry)
            self._drop_tree(child, emit_deletes=False, rm=False)
        for s in [w for w in d2.waiters if w.wait_name == name2]:
            if s.wait_dir is d2:
                self._activate(s, "sync")
        specs = [s for s in d2.owners if not s.prunes(new_path, name2)]
        if specs:
            self._walk(specs, new_path, "sync")  # enqueues creates at the new location
        cut = len(old_path)
        for r, entries in old_rels.items():
            for rel, fspecs in entries:
                new_rel = (new_path + (r.path + "/" + rel)[cut:])[r.plen :]
                p = r.pending.get(new_rel)
                if p is not None and p.kind == "create" and new_path.startswith(r.path + "/"):
                    self._enqueue(r, new_rel, "move", p.specs, rel)
                else:
                    self._enqueue(r, rel, "delete", fspecs)
        for wd in old_wds:
            if wd not in self._by_wd:
                self._rm_watch(wd)
        self._log_limit()

    def _moved_self(self, d: _Dir) -> None:
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

    def _dir_gone(self, d: _Dir) -> None:
        """IN_IGNORED: the kernel dropped the watch (directory deleted or unmounted)."""
        self._drop_tree(d, emit_deletes=True, rm=True)  # re-activates a spec whose top this was

    # ---------------------------------------------------------------- change queue / debounce

    def _accepting(
        self, owners: Iterable[_Spec], dpath: str, name: str
    ) -> dict[_Root, tuple[str, tuple[_Spec, ...]]]:
        """Per root: (rel path, specs that accept the file)."""
        path = f"{dpath}/{name}"
        out: dict[_Root, tuple[str, tuple[_Spec, ...]]] = {}
        for s in owners:
            if s.accepts_file(path, name):
                r = s.root
                prev = out.get(r)
                out[r] = (path[r.plen :], (*prev[1], s) if prev else (s,))
        return out

    def _file_change(self, owners: Iterable[_Spec], dpath: str, name: str, kind: str) -> None:
        for r, (rel, specs) in self._accepting(owners, dpath, name).items():
            self._enqueue(r, rel, kind, specs)

    def _enqueue(
        self,
        r: _Root,
        rel: str,
        kind: str,
        specs: tuple[_Spec, ...],
        from_rel: str | None = None,
        replaced: bool = False,
    ) -> None:
        """Merge a change into the root's settle window (see ``_MERGE``).

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
                        self._enqueue(r, prev.from_rel, "delete", prev.specs)
                    return
                kind, from_rel = "move", prev.from_rel
            else:
                merged = _MERGE[(prev.kind, kind)]
                if merged is None:
                    return
                kind = merged
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        loop = self._loop
        now = self._now if self._now is not None else loop.time() if loop is not None else 0.0
        pend[rel] = _Pending(kind, specs, now + deb / 1000.0, from_rel)
        if r.timer is None and loop is not None:
            if deb == 0:
                r.timer = loop.call_soon(self._flush, r)
            else:
                self._arm(r, loop, now + deb / 1000.0, now, deb)

    def _arm(self, r: _Root, loop: asyncio.AbstractEventLoop, due: float, now: float, deb: int) -> None:
        """Flush at ``due``, but at most once per debounce window per root.

        The rate limit is what turns a sustained storm into a few ``file.batch`` events: each
        flush delivers everything that settled since the previous one.
        """
        due = max(due, r.last_flush + deb / 1000.0)
        r.timer = loop.call_later(max(0.0, due - now), self._flush, r)

    def _flush(self, r: _Root) -> None:
        """Deliver every path of ``r`` that has been quiet for the debounce window."""
        r.timer = None
        pend = r.pending
        if not pend or self._roots.get(r.path) is not r:
            return
        loop = self._loop
        assert loop is not None
        deb = self.debounce_ms if r.debounce_ms is None else r.debounce_ms
        now = loop.time()
        ready: list[tuple[str, _Pending]] = []
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
        out: list[tuple[str, _Pending, _Spec]] = []
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
            self._emit(r, "file." + p.kind, data)

    def _emit_batch(self, r: _Root, out: list[tuple[str, _Pending, _Spec]]) -> None:
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
        self._emit(r, "file.batch", data)

    def _emit(self, r: _Root, etype: str, data: dict) -> None:
        r.counts[etype] = r.counts.get(etype, 0) + 1
        try:
            self._emit_cb(etype, r.path, data)
        except Exception:
            log.exception("emit(%s) for %s raised", etype, r.path)

    # ---------------------------------------------------------------- overflow

    def _overflow(self, since_ns: int) -> None:
        """The kernel queue overflowed and events were lost: rescan every root against the view."""
        self._moves.clear()
        watermark = since_ns - RESCAN_CTIME_SLACK_NS
        roots = [r for r in self._roots.values() if r.enabled and r.specs]
        log.warning("inotify event queue overflowed; rescanning %d root(s)", len(roots))
        for r in roots:
            r.overflows += 1
            r.rescans += 1
            self._emit(r, "file.rescan", {"reason": "overflow", "event_type": "rescan"})
            for s in list(r.specs.values()):
                if s.error:
                    continue
                if not s.active:
                    self._activate(s, "sync")
                    continue
                if not _isdir(s.abs):
                    for d in list(s.dirs):
                        if d in s.dirs:
                            self._drop_tree(d, emit_deletes=True, rm=True)
                    self._activate(s, "sync")
                    continue
                visited = self._walk([s], s.abs, "rescan", watermark)
                for d in list(s.dirs):
                    if d in s.dirs and d not in visited:
                        self._drop_tree(d, emit_deletes=True, rm=True)
        self._log_limit()

    # ---------------------------------------------------------------- watches

    def _activate(self, s: _Spec, mode: str) -> None:
        """Watch the spec's tree, or the nearest existing ancestor until the spec path appears."""
        self._clear_wait(s)
        if self._inotify is None or s.error:
            return
        for _ in range(32):  # re-check loop closes the race with a concurrent mkdir
            if _isdir(s.abs):
                self._walk([s], s.abs, mode)
                top = self._by_path.get(s.abs)
                if top is not None and s in top.owners:
                    s.active = True
                    return
                if s.abs in s.unwatched:
                    return  # refused by the watch limit; retried on rescan / set_root
            s.active = False
            parent, child = os.path.split(s.abs)
            while parent != "/" and not _isdir(parent):
                parent, child = os.path.split(parent)
            d = self._register(parent, ())
            if d is None:
                s.root.last_error = f"cannot watch {parent} to wait for {s.abs}"
                return
            d.waiters.add(s)
            s.wait_dir, s.wait_name = d, child
            if not _isdir(os.path.join(parent, child)):
                return
            self._clear_wait(s)
            mode = "sync"

    def _clear_wait(self, s: _Spec) -> None:
        d = s.wait_dir
        s.wait_dir = None
        if d is not None:
            d.waiters.discard(s)
            if not d.owners and not d.waiters and self._by_wd.get(d.wd) is d:
                self._unregister(d, rm=True)

    def _deactivate(self, s: _Spec) -> None:
        """Remove one spec's watches (other specs sharing a directory keep it)."""
        self._clear_wait(s)
        for d in list(s.dirs):
            d.owners.discard(s)
            if not d.owners and not d.waiters and self._by_wd.get(d.wd) is d:
                self._unregister(d, rm=True)
        s.dirs.clear()
        s.unwatched.clear()
        s.active = False

    def _register(self, path: str, specs: Iterable[_Spec], ino: int = 0) -> _Dir | None:
        """Add (or refresh) the watch on ``path`` and record ``specs`` as its owners."""
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(path, _MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                for s in specs:
                    s.unwatched.add(path)
                    self._enospc_roots.add(s.root)
            elif e.errno not in (errno.ENOENT, errno.ENOTDIR):
                for s in specs:
                    s.root.last_error = f"cannot watch {path}: {e.strerror}"
                log.warning("cannot watch %s: %s", path, e)
            return None
        d = self._by_wd.get(wd)
        if d is None:
            stale = self._by_path.get(path)
            if stale is not None:  # a different directory used to live here; its watch is gone
                self._unregister(stale, rm=True)
            d = self._by_wd[wd] = self._by_path[path] = _Dir(wd, path)
        elif d.path != path:
            # Same inode under a new name (a rename we did not see, e.g. lost in an overflow):
            # report the old names gone; the caller's scan reports them at the new place.
            if d.owners and d.files:
                for name in d.files:
                    self._file_change(d.owners, d.path, name, "delete")
                d.files = set()
            if self._by_path.get(d.path) is d:
                del self._by_path[d.path]
            self._unlink_parent(d)
            d.path = path
            stale = self._by_path.get(path)
            if stale is not None and stale is not d:
                self._unregister(stale, rm=True)
            self._by_path[path] = d
        if ino:
            d.ino = ino
        elif not d.ino:
            with contextlib.suppress(OSError):
                d.ino = os.lstat(path).st_ino
        parent, name = path.rsplit("/", 1) if path != "/" else ("", "")
        pd = self._by_path.get(parent or "/") if name else None
        if pd is not None and pd is not d:
            pd.children[name] = d
        for s in specs:
            d.owners.add(s)
            s.dirs.add(d)
            if s.unwatched:
                s.unwatched.discard(path)
        return d

    def _unlink_parent(self, d: _Dir) -> None:
        parent, name = d.path.rsplit("/", 1)
        pd = self._by_path.get(parent or "/")
        if pd is not None and pd.children.get(name) is d:
            del pd.children[name]

    def _unregister(self, d: _Dir, rm: bool) -> None:
        if self._by_wd.get(d.wd) is d:
            del self._by_wd[d.wd]
            if rm:
                self._rm_watch(d.wd)
        if self._by_path.get(d.path) is d:
            del self._by_path[d.path]
        self._unlink_parent(d)

    def _rm_watch(self, wd: int) -> None:
        if self._inotify is not None:
            # EINVAL when the kernel already dropped it together with the directory
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(wd)

    def _drop_tree(self, d: _Dir, *, emit_deletes: bool, rm: bool, reactivate: bool = True) -> None:
        """Forget ``d`` and everything below it.

        Specs whose top directory or waiting point was inside are re-activated: watched again
        if the path exists (e.g. re-created), otherwise they wait on the nearest parent.
        """
        orphans: list[_Spec] = []
        stack = [d]
        while stack:
            x = stack.pop()
            stack.extend(x.children.values())
            if emit_deletes and x.owners:
                for name in x.files:
                    self._file_change(x.owners, x.path, name, "delete")
            for s in x.owners:
                s.dirs.discard(x)
                if s.abs == x.path:
                    s.active = False
                    orphans.append(s)
            for s in x.waiters:
                s.wait_dir = None
                orphans.append(s)
            x.owners = set()
            x.waiters = set()
            x.files = set()
            self._unregister(x, rm)
            x.children = {}
        if reactivate:
            for s in dict.fromkeys(orphans):
                if self._roots.get(s.root.path) is s.root and s.root.specs.get(s.spec) is s:
                    self._activate(s, "sync")

    def _walk(self, specs: list[_Spec], top: str, mode: str, since_ns: int | None = None) -> set[_Dir]:
        """Watch ``top`` and every non-pruned directory below it, refreshing the view.

        mode ``baseline``: record only. ``sync``: report files that are new to the view (a new
        directory -> all of its files). ``rescan``: also report vanished files, and files whose
        ctime is at or after ``since_ns`` as modified.
        """
        visited: set[_Dir] = set()
        stack: list[tuple[str, list[_Spec], int]] = [(top, specs, 0)]
        while stack:
            path, sp, ino = stack.pop()
            d = self._register(path, sp, ino)
            if d is not None:
                visited.add(d)
            names: set[str] = set()
            entries: dict[str, os.DirEntry[str]] = {}
            try:
                with os.scandir(path) as it:
                    for e in it:
                        try:
                            isdir = e.is_dir(follow_symlinks=False)
                        except OSError:
                            continue
                        if isdir:
                            child = e.path
                            csp = [s for s in sp if not s.prunes(child, e.name)]
                            if csp:
                                stack.append((child, csp, e.inode()))
                        else:
                            names.add(e.name)
                            if since_ns is not None:
                                entries[e.name] = e
            except OSError:
                continue
            if d is None:
                if mode != "baseline":  # unwatched (limit) but its files still exist: report them
                    for name in names:
                        self._file_change(sp, path, name, "create")
                continue
            old = d.files
            d.files = names
            if mode == "baseline":
                continue
            owners = d.owners
            for name in names - old:
                self._file_change(owners, path, name, "create")
            if since_ns is not None:
                for name in old - names:
                    self._file_change(owners, path, name, "delete")
                for name in names & old:
                    try:
                        changed = entries[name].stat(follow_symlinks=False).st_ctime_ns >= since_ns
                    except OSError:
                        continue
                    if changed:
                        self._file_change(owners, path, name, "modify")
        return visited

    def _log_limit(self) -> None:
        """Log the watch-limit problem once per root (health() keeps the live count)."""
        if not self._enospc_roots:
            return
        for r in self._enospc_roots:
            if r.limit_logged or self._roots.get(r.path) is not r:
                continue
            n = len(set().union(*(s.unwatched for s in r.specs.values())))
            if not n:
                continue
            r.limit_logged = True
            log.warning(
                "inotify watch limit reached (fs.inotify.max_user_watches=%s): %d directories under %s "
                "are not watched; raise it with `sysctl fs.inotify.max_user_watches=<N>`",
                _max_user_watches(),
                n,
                r.path,
            )
        self._enospc_roots.clear()
