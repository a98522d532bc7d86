"""The watch table: one inotify fd, and which directory each watch descriptor stands for.

inotify is not recursive, so every directory below a spec path has its own watch. Each ``Dir`` also keeps
the names of its non-directory entries (the view), so a rescan can tell creates, deletes and changes
apart; memory is O(watched entries), never O(events).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from inotify_simple import INotify, flags

from .filters import Filter, WatchSpec

if TYPE_CHECKING:
    from .settle import Pending

log = logging.getLogger("aiwg.watcher")

MASK = (
    flags.CREATE
    | flags.DELETE
    | flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.ATTRIB  # touch, chmod: a change to the file, as fs.watch and watchman see it
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.DONT_FOLLOW
    | flags.ONLYDIR
    | flags.EXCL_UNLINK
)


#: Shared empties: most directories have no children, many no files, none a waiter. Sharing these instead of
#: an empty set or dict per directory is most of what keeps 20,000 watched directories small.
NO_FILES: frozenset[str] = frozenset()
NO_CHILDREN: Mapping[str, Dir] = MappingProxyType({})
NO_SPECS: frozenset[Spec] = frozenset()


class Root:
    """One project root: its specs, and the settle state of its pending changes."""

    __slots__ = (
        "counts",
        "debounce_ms",
        "enabled",
        "last_error",
        "last_flush",
        "limit_logged",
        "moved_to",
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
        self.specs: dict[WatchSpec, Spec] = {}
        self.debounce_ms: int | None = None
        self.enabled = True
        self.pending: dict[str, Pending] = {}  # rel path -> change; ordered by last touch
        self.moved_to: dict[str, str] = {}  # pre-window path -> the pending path its content now sits at
        self.timer: asyncio.Handle | None = None
        self.last_flush = float("-inf")  # loop time of the last flush that delivered something
        self.counts: dict[str, int] = {}
        self.overflows = 0
        self.rescans = 0
        self.last_error: str | None = None
        self.limit_logged = False


class Spec(Filter):
    """A spec's filter plus where it stands in the table: its directories, or the parent it waits on."""

    __slots__ = ("active", "dirs", "root", "unwatched", "wait_dir", "wait_name")

    def __init__(self, root: Root, spec: WatchSpec) -> None:
        super().__init__(root.path, spec)
        self.root = root
        self.dirs: set[Dir] = set()  # watched directories
        self.unwatched: set[Dir] = set()  # directories of the tree the watch limit refused (wd -1)
        self.active = False
        self.wait_dir: Dir | None = None
        self.wait_name = ""


class Dir:
    """A directory of some spec's tree: its watch (``wd`` -1 when the limit refused one) and its view."""

    __slots__ = ("children", "files", "ino", "owners", "path", "waiters", "wd")

    def __init__(self, wd: int, path: str) -> None:
        self.wd = wd
        self.path = path
        self.ino = 0
        #: specs whose tree includes this directory (an interned frozenset shared by the whole tree)
        self.owners: frozenset[Spec] = NO_SPECS
        #: specs waiting for a child of this directory to appear (interned too)
        self.waiters: frozenset[Spec] = NO_SPECS
        #: names of non-directory entries (the view); NO_FILES until the first one
        self.files: set[str] | frozenset[str] = NO_FILES
        self.children: Mapping[str, Dir] = NO_CHILDREN

    def add_file(self, name: str) -> None:
        if self.files is NO_FILES:
            self.files = {name}
        else:
            self.files.add(name)  # type: ignore[union-attr]

    def discard_file(self, name: str) -> None:
        if name in self.files:
            self.files.discard(name)  # type: ignore[union-attr]

    def link(self, name: str, child: Dir) -> None:
        if self.children is NO_CHILDREN:
            self.children = {}
        self.children[name] = child  # type: ignore[index]


def isdir(path: str) -> bool:
    """A real directory (symlinks are never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def max_user_watches() -> str:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return f.read().strip()
    except OSError:
        return "?"


class WatchTable:
    """Adds and removes watches and keeps ``wd -> Dir`` and ``path -> Dir`` in step with the kernel.

    ``on_renamed(d)`` is called when a known directory turns up under a new name (a rename that was not
    seen, e.g. lost in an overflow), before its file names are forgotten, so the caller can report them gone;
    ``on_replaced(d)`` when the path of ``d`` now holds another directory (d's tree is gone).
    """

    def __init__(self, on_renamed: Callable[[Dir], None], on_replaced: Callable[[Dir], None]) -> None:
        self.inotify: INotify | None = None
        self.by_wd: dict[int, Dir] = {}
        self.by_path: dict[str, Dir] = {}
        #: roots that hit the watch limit since the last time it was logged
        self.enospc_roots: set[Root] = set()
        self._on_renamed = on_renamed
        #: a path being watched turns out to be a different directory than the one the table has there
        self._on_replaced = on_replaced
        self._spec_sets: dict[frozenset[Spec], frozenset[Spec]] = {NO_SPECS: NO_SPECS}

    def specs_set(self, specs: frozenset[Spec]) -> frozenset[Spec]:
        """The one shared instance of this combination of specs."""
        return self._spec_sets.setdefault(specs, specs)

    def own(self, d: Dir, s: Spec) -> None:
        if s not in d.owners:
            d.owners = self.specs_set(d.owners | {s})

    def disown(self, d: Dir, s: Spec) -> None:
        if s in d.owners:
            d.owners = self.specs_set(d.owners - {s})

    def add_waiter(self, d: Dir, s: Spec) -> None:
        d.waiters = self.specs_set(d.waiters | {s})

    def remove_waiter(self, d: Dir, s: Spec) -> None:
        if s in d.waiters:
            d.waiters = self.specs_set(d.waiters - {s})

    def forget_spec(self, s: Spec) -> None:
        """Drop cached combinations that name a spec which is gone (reload)."""
        self._spec_sets = {k: v for k, v in self._spec_sets.items() if s not in k}

    def open(self) -> INotify:
        self.inotify = INotify(nonblocking=True)
        return self.inotify

    def close(self) -> None:
        self.by_wd.clear()
        self.by_path.clear()
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    def register(self, path: str, specs: Iterable[Spec], ino: int = 0) -> Dir | None:
        """Add (or refresh) the watch on ``path`` and record ``specs`` as its owners."""
        assert self.inotify is not None
        try:
            wd = self.inotify.add_watch(path, MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                return self._unwatched(path, specs, ino)
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                for s in specs:
                    s.root.last_error = f"cannot watch {path}: {e.strerror}"
                log.warning("cannot watch %s: %s", path, e)
            return None
        d = self.by_wd.get(wd)
        if d is None:
            stale = self.by_path.get(path)
            if stale is not None and stale.wd < 0:  # unwatched until now: it keeps its view
                d = stale
                d.wd = wd
                self.by_wd[wd] = d
                for s in d.owners:
                    s.unwatched.discard(d)
                    s.dirs.add(d)
            else:
                if stale is not None:  # a different directory used to live here: what it held is gone
                    self._on_replaced(stale)
                    if self.by_path.get(path) is stale:
                        self.forget(stale)
                        self.unregister(stale, rm=True)
                d = self.by_wd[wd] = self.by_path[path] = Dir(wd, path)
        elif d.path != path:
            # Same inode under a new name: the old names are gone; the caller's scan reports the new ones.
            if d.owners and d.files:
                self._on_renamed(d)
                d.files = NO_FILES
            if self.by_path.get(d.path) is d:
                del self.by_path[d.path]
            self.unlink_parent(d)
            d.path = path
            stale = self.by_path.get(path)
            if stale is not None and stale is not d:
                self.forget(stale)
                self.unregister(stale, rm=True)
            self.by_path[path] = d
        if ino:
            d.ino = ino
        elif not d.ino:
            with contextlib.suppress(OSError):
                d.ino = os.lstat(path).st_ino
        parent, name = path.rsplit("/", 1) if path != "/" else ("", "")
        pd = self.by_path.get(parent or "/") if name else None
        if pd is not None and pd is not d:
            pd.link(name, d)
        for s in specs:
            self.own(d, s)
            s.dirs.add(d)
        return d

    def _unwatched(self, path: str, specs: Iterable[Spec], ino: int) -> Dir:
        """The watch limit refused ``path``: track it without a watch, so it is counted and rescanned."""
        d = self.by_path.get(path)
        if d is None:
            d = self.by_path[path] = Dir(-1, path)
            d.ino = ino
            parent, name = path.rsplit("/", 1)
            pd = self.by_path.get(parent or "/")
            if pd is not None:
                pd.link(name, d)
        for s in specs:
            self.own(d, s)
            if d.wd < 0:
                s.unwatched.add(d)
            else:
                s.dirs.add(d)
            self.enospc_roots.add(s.root)
        return d

    @staticmethod
    def forget(d: Dir) -> None:
        """Take ``d`` out of every spec that counts it."""
        for s in d.owners:
            s.dirs.discard(d)
            s.unwatched.discard(d)

    def unlink_parent(self, d: Dir) -> None:
        parent, name = d.path.rsplit("/", 1)
        pd = self.by_path.get(parent or "/")
        if pd is not None and pd.children.get(name) is d:
            del pd.children[name]  # type: ignore[attr-defined]

    def unregister(self, d: Dir, rm: bool) -> None:
        if d.wd >= 0 and self.by_wd.get(d.wd) is d:
            del self.by_wd[d.wd]
            if rm:
                self.rm_watch(d.wd)
        if self.by_path.get(d.path) is d:
            del self.by_path[d.path]
        self.unlink_parent(d)

    def rm_watch(self, wd: int) -> None:
        if self.inotify is not None:
            # EINVAL when the kernel already dropped it together with the directory
            with contextlib.suppress(OSError):
                self.inotify.rm_watch(wd)

    def release(self, d: Dir) -> None:
        """Drop ``d``'s watch once no spec owns it or waits on it."""
        if not d.owners and not d.waiters and (self.by_wd.get(d.wd) is d or self.by_path.get(d.path) is d):
            self.unregister(d, rm=True)
