"""What a watch spec lets through: the spec itself, gitignore-style ignores, and the built-in ignores.

Filters decide on path strings only; they never touch the filesystem or the watch table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ...globs import Matcher, compile_gitignore

KINDS = ("create", "modify", "delete")
AUTO_IGNORE_DIRS = frozenset({".git", "node_modules", "__pycache__"})
AUTO_IGNORE_FILES = frozenset({".git", "4913"})  # .git is a file in worktrees/submodules
AUTO_IGNORE_SUFFIXES = (".swp", ".swo", ".swx", "~")
#: The service's own state inside a project is never reported (its socket link lives there).
DAEMON_STATE = ".aiwg/daemon"
#: Nor is the service's ``.aiwg/daemon.pid`` (and the temp file it is renamed from).
DAEMON_PID = "daemon.pid"


@dataclass(frozen=True)
class WatchSpec:
    """One entry of a project's ``watch.paths`` config."""

    path: str
    events: tuple[str, ...] = ("create", "modify", "delete")
    extensions: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


class IgnoreMatcher:
    """gitignore-style globs, compiled once.

    Supported: ``*``/``?``/``[...]``, ``**`` segments, trailing ``/`` (directories only), a
    pattern without an inner ``/`` matches the basename at any depth, a pattern with one is
    anchored to the spec path, ``!`` re-includes (last match wins). As in git, a file below an
    ignored directory cannot be re-included (ignored directories are not even watched).
    ``dir/**`` also prunes ``dir`` itself, since every entry below it is ignored.

    Matching is linear in the path whatever the patterns (``globs``): a pattern without ``/`` is
    tested against the basename only, instead of as ``**/pattern`` against the whole path.
    """

    __slots__ = ("_fast", "_rules")

    def __init__(self, patterns: Iterable[str]) -> None:
        # (matcher, on the basename?, negated?, directories only?)
        rules: list[tuple[Matcher, bool, bool, bool]] = []
        raw: list[tuple[str, bool, bool, bool]] = []
        for line in patterns:
            p = line.strip()
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
            raw.append((p, not anchored, neg, dir_only))
            if p.endswith("/**") and not neg and len(p) > 3:
                raw.append((p[:-3], not anchored, False, True))
        for p, base, neg, dir_only in raw:
            rules.append((compile_gitignore(p), base, neg, dir_only))
        self._rules = rules
        #: without negations, one matcher per (basename?, kind) answers at once: {(base, is_dir): matcher}
        self._fast: dict[tuple[bool, bool], Matcher] | None = None
        if raw and not any(neg for _, _, neg, _ in raw):
            self._fast = {}
            for base in (True, False):
                for is_dir in (True, False):
                    pats = [p for p, b, _, d in raw if b == base and (is_dir or not d)]
                    if pats:
                        self._fast[(base, is_dir)] = compile_gitignore(*pats)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def match(self, rel: str, is_dir: bool) -> bool:
        """True if ``rel`` (relative to the spec path, ``/``-separated) is ignored."""
        name = rel.rpartition("/")[2]
        if self._fast is not None:
            m = self._fast.get((True, is_dir))
            if m is not None and m.fullmatch(name):
                return True
            m = self._fast.get((False, is_dir))
            return m is not None and m.fullmatch(rel)
        for m, base, neg, dir_only in reversed(self._rules):
            if dir_only and not is_dir:
                continue
            if m.fullmatch(name if base else rel):
                return not neg
        return False


class Filter:
    """The decisions of one spec under one root: which directories to prune, which files and kinds to report."""

    __slots__ = ("abs", "daemon_dir", "error", "events", "exts", "matcher", "pid_file", "plen", "spec")

    def __init__(self, root_path: str, spec: WatchSpec) -> None:
        self.spec = spec
        self.error: str | None = None
        rel = os.path.normpath(spec.path.strip() or ".")
        if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            self.error = f"spec path {spec.path!r} is outside the project root"
        self.abs = root_path if rel == "." else os.path.join(root_path, rel)
        self.plen = len(self.abs) + (0 if self.abs.endswith("/") else 1)
        self.daemon_dir = os.path.join(root_path, DAEMON_STATE)
        self.pid_file = os.path.join(root_path, ".aiwg", DAEMON_PID)
        self.events = frozenset(e for e in spec.events if e in KINDS)
        self.exts = tuple(e if e.startswith(".") else "." + e for e in spec.extensions if e)
        self.matcher = IgnoreMatcher(spec.ignore)

    def prunes(self, path: str, name: str) -> bool:
        """Directories that are neither watched nor descended into."""
        if name in AUTO_IGNORE_DIRS or path == self.daemon_dir:
            return True
        return bool(self.matcher) and self.matcher.match(path[self.plen :], True)

    def accepts_file(self, path: str, name: str) -> bool:
        if name in AUTO_IGNORE_FILES or name.endswith(AUTO_IGNORE_SUFFIXES) or name.startswith(".#"):
            return False
        if (name == DAEMON_PID and path == self.pid_file) or (
                name.startswith(".daemon.pid.") and os.path.dirname(path) == os.path.dirname(self.pid_file)):
            return False  # the service's own file: writing it must never look like a change to the project
        if self.exts and not name.endswith(self.exts):
            return False
        return not (self.matcher and self.matcher.match(path[self.plen :], False))

    def allows(self, kind: str) -> bool:
        if kind == "move":
            return "create" in self.events or "delete" in self.events
        return kind in self.events
