"""Scanning trees into the table: first watch, new directories, and the full rescan after a lost event.

A rescan walks every tree against the view: new names are creates, missing names deletes, and files whose
ctime is not older than the start of the previous read (minus ``RESCAN_CTIME_SLACK_NS``) are modifies. Lost
events happened after that read, so no change is lost; a few recent files may be reported twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .table import Dir, Spec, WatchTable

#: After an overflow, files whose ctime is newer than (last clean read - slack) count as modified.
#: The slack covers the coarse kernel timestamp clock and filesystems with 1 s timestamps.
RESCAN_CTIME_SLACK_NS = 1_000_000_000

Report = Callable[[Iterable[Spec], str, str, str], None]


class Scanner:
    """Walks directories into the table and reports what it finds through ``report(owners, dir, name, kind)``."""

    def __init__(self, table: WatchTable, report: Report) -> None:
        self.table = table
        self.report = report

    def walk(self, specs: list[Spec], top: str, mode: str, since_ns: int | None = None) -> set[Dir]:
        """Watch ``top`` and every non-pruned directory below it, refreshing the view.

        mode ``baseline``: record only. ``sync``: report files that are new to the view (a new
        directory -> all of its files). ``rescan``: also report vanished files, and files whose
        ctime is at or after ``since_ns`` as modified.
        """
        visited: set[Dir] = set()
        stack: list[tuple[str, list[Spec], int]] = [(top, specs, 0)]
        while stack:
            path, sp, ino = stack.pop()
            d = self.table.register(path, sp, ino)
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
                        self.report(sp, path, name, "create")
                continue
            old = d.files
            d.files = names
            if mode == "baseline":
                continue
            owners = d.owners
            for name in names - old:
                self.report(owners, path, name, "create")
            if since_ns is not None:
                for name in old - names:
                    self.report(owners, path, name, "delete")
                for name in names & old:
                    try:
                        changed = entries[name].stat(follow_symlinks=False).st_ctime_ns >= since_ns
                    except OSError:
                        continue
                    if changed:
                        self.report(owners, path, name, "modify")
        return visited
