"""Scanning trees into the table: first watch, new directories, and the full rescan after a lost event.

A rescan walks every tree against the view: new names are creates, missing names deletes, and files whose
ctime is not older than the start of the previous read (minus a slack for coarse timestamps, ``ctime_slack``)
are modifies. Lost events happened after that read, so no change is lost; a few recent files may be reported
twice. ``walk_steps`` yields after each directory, so the engine can run a big rescan in slices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from sys import intern

from .table import NO_FILES, Dir, Spec, WatchTable

#: After an overflow, files whose ctime is newer than (last clean read - slack) count as modified.
#: The slack covers the coarse kernel timestamp clock and filesystems with 1 s timestamps.
RESCAN_CTIME_SLACK_NS = 1_000_000_000
#: The slack where timestamps have sub-second parts: the kernel's coarse clock lags by at most a tick (10 ms),
#: so a file last changed before that is not reported modified by a rescan (the 1 s slack was reporting most
#: files of a storm a second time).
FINE_CTIME_SLACK_NS = 50_000_000


def ctime_slack(path: str) -> int:
    """The slack for the tree at ``path``: small if its timestamps have sub-second parts, else 1 s."""
    try:
        st = os.stat(path)
    except OSError:
        return RESCAN_CTIME_SLACK_NS
    return FINE_CTIME_SLACK_NS if st.st_ctime_ns % 1_000_000_000 else RESCAN_CTIME_SLACK_NS

Report = Callable[[Iterable[Spec], str, str, str], None]


class Scanner:
    """Walks directories into the table and reports what it finds through ``report(owners, dir, name, kind)``."""

    def __init__(self, table: WatchTable, report: Report, drop: Callable[[Dir], None]) -> None:
        self.table = table
        self.report = report
        #: forget a directory the view has but the disk no longer does (reporting its files gone)
        self.drop = drop

    def walk(self, specs: list[Spec], top: str, mode: str, since_ns: int | None = None,
             report: Report | None = None) -> set[Dir]:
        """The whole walk at once (see ``walk_steps``); returns the directories visited."""
        visited: set[Dir] = set()
        for _ in self.walk_steps(specs, top, mode, since_ns, report, visited):
            pass
        return visited

    @staticmethod
    def _appeared_since(d: Dir, path: str, names: set[str], since_ns: int, report: Report) -> None:
        """Files of ``path`` created after ``since_ns`` (the directory's mtime says whether to look): a walk
        that ran in slices found them before their directory was watched, so no event will tell of them."""
        try:
            if os.stat(path).st_mtime_ns < since_ns:
                return
        except OSError:
            return
        for name in names:
            try:
                if os.stat(os.path.join(path, name), follow_symlinks=False).st_ctime_ns >= since_ns:
                    report(d.owners, path, name, "create")
            except OSError:
                continue

    def walk_steps(self, specs: list[Spec], top: str, mode: str, since_ns: int | None = None,
                   report: Report | None = None, visited: set[Dir] | None = None) -> Iterator[None]:
        """Watch ``top`` and every non-pruned directory below it, refreshing the view.

        mode ``baseline``: record only (with ``since_ns``, a walk run in slices: also report files created
        since then, in directories whose mtime shows a change). ``sync``: report files that are new to the view (a new
        directory -> all of its files) and files the view had that are gone: the scan supersedes
        queued events, which the engine then ignores where they contradict the view. ``rescan``: also
        report files whose ctime is at or after ``since_ns`` as modified. Directories the watch limit
        refuses are walked all the same (their ``Dir`` has no watch), so they are counted and seen.
        """
        report = report or self.report
        visited = set() if visited is None else visited
        stack: list[tuple[str, list[Spec], int]] = [(top, specs, 0)]
        while stack:
            yield  # one directory per step: a caller may run the walk in slices
            path, sp, ino = stack.pop()
            d = self.table.register(path, sp, ino)
            if d is not None:
                visited.add(d)
            names: set[str] = set()
            subdirs: set[str] = set()
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
                                subdirs.add(e.name)
                                stack.append((child, csp, e.inode()))
                        else:
                            names.add(intern(e.name))  # one string per distinct name (index.ts, ...)
                            if since_ns is not None:
                                entries[e.name] = e
            except OSError:
                continue
            if d is None:
                if mode != "baseline":  # cannot be watched (permissions...) but its files exist: report them
                    for name in names:
                        report(sp, path, name, "create")
                continue
            for name, gone in [(n, c) for n, c in d.children.items() if n not in subdirs]:
                if d.children.get(name) is gone:  # queued events about it are stale now; the scan wins
                    self.drop(gone)
            old = d.files
            d.files = names if names else NO_FILES
            if mode == "baseline":
                if since_ns is not None and names:  # a first walk in slices: what appeared while it ran
                    self._appeared_since(d, path, names, since_ns, report)
                continue
            owners = d.owners
            for name in names - old:
                report(owners, path, name, "create")
            for name in old - names:
                report(owners, path, name, "delete")
            if since_ns is not None:
                for name in names & old:
                    try:
                        changed = entries[name].stat(follow_symlinks=False).st_ctime_ns >= since_ns
                    except OSError:
                        continue
                    if changed:
                        report(owners, path, name, "modify")
