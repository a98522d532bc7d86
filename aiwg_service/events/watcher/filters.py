"""What a watch spec lets through: the spec itself, gitignore-style ignores, and the built-in ignores.

Filters decide on path strings only; they never touch the filesystem or the watch table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ...globs import gitignore_regex

KINDS = ("create", "modify", "delete")
AUTO_IGNORE_DIRS = frozenset({".git", "node_modules", "__pycache__"})
AUTO_IGNORE_FILES = frozenset({".git", "4913"})  # .git is a file in worktrees/submodules
AUTO_IGNORE_SUFFIXES = (".swp", ".swo", ".swx", "~")
#: The service's own state inside a project is never reported (its socket link lives there).
DAEMON_STATE = ".aiwg/daemon"


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
            rules.append((re.compile(prefix + gitignore_regex(p)), neg, dir_only))
            if p.endswith("/**") and not neg and len(p) > 3:
                rules.append((re.compile(prefix + gitignore_regex(p[:-3])), False, True))
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


class Filter:
    """The decisions of one spec under one root: which directories to prune, which files and kinds to report."""

    __slots__ = ("abs", "daemon_dir", "error", "events", "exts", "matcher", "plen", "spec")

    def __init__(self, root_path: str, spec: WatchSpec) -> None:
        self.spec = spec
        self.error: str | None = None
        rel = os.path.normpath(spec.path.strip() or ".")
        if os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            self.error = f"spec path {spec.path!r} is outside the project root"
        self.abs = root_path if rel == "." else os.path.join(root_path, rel)
        self.plen = len(self.abs) + (0 if self.abs.endswith("/") else 1)
        self.daemon_dir = os.path.join(root_path, DAEMON_STATE)
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
        if self.exts and not name.endswith(self.exts):
            return False
        return not (self.matcher and self.matcher.match(path[self.plen :], False))

    def allows(self, kind: str) -> bool:
        if kind == "move":
            return "create" in self.events or "delete" in self.events
        return kind in self.events
