"""Ground truth for watcher tests: what happened to each path, and whether the reported events agree.

The rules (issue 11): every path that exists at the end and was touched has a create, modify or move-to;
every path that existed before and not after has a delete or a move-from; no path is reported that never
existed; the last event naming a path agrees with its final existence. ``file.batch`` parts count through
their ``path_kinds``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path

PRESENT = frozenset({"create", "modify", "move_to"})
GONE = frozenset({"delete", "move_from"})


def raw_path(data: dict, key: str) -> str:
    """The path as the file system has it (``<key>_b64`` wins over the printable form)."""
    b64 = data.get(key + "_b64")
    return os.fsdecode(base64.b64decode(b64)) if b64 else data[key]


def reports(events: Iterable[tuple[str, str, dict]]) -> list[tuple[str, str]]:
    """(path, kind) in delivery order, kinds from PRESENT | GONE; batches expanded."""
    out: list[tuple[str, str]] = []
    for etype, _root, d in events:
        if etype == "file.batch":
            b64s = d.get("paths_b64") or [None] * len(d["paths"])
            for shown, b64, kind in zip(d["paths"], b64s, d["path_kinds"], strict=True):
                out.append((os.fsdecode(base64.b64decode(b64)) if b64 else shown, kind))
        elif etype == "file.move":
            out.append((raw_path(d, "from_path"), "move_from"))
            out.append((raw_path(d, "path"), "move_to"))
        elif etype in ("file.create", "file.modify", "file.delete"):
            out.append((raw_path(d, "path"), etype[5:]))
    return out


def tree_files(root: Path, top: str = "src") -> set[str]:
    """Every non-directory path below ``root/top``, relative to ``root`` (what a watch of ``top`` covers)."""
    out: set[str] = set()
    base = os.fsencode(root)
    for dirpath, _dirs, files in os.walk(os.path.join(base, os.fsencode(top))):
        for f in files:
            out.add(os.fsdecode(os.path.relpath(os.path.join(dirpath, f), base)))
    return out


def dir_count(root: Path, top: str = "src") -> int:
    return sum(1 for _ in os.walk(root / top))


def problems(before: set[str], after: set[str], touched: set[str], ever: set[str],
             events: Iterable[tuple[str, str, dict]]) -> list[str]:
    """Everything the events got wrong against the truth (empty when they are right)."""
    seen = reports(events)
    last: dict[str, str] = {}
    kinds: dict[str, set[str]] = {}
    for path, kind in seen:
        last[path] = kind
        kinds.setdefault(path, set()).add(kind)
    bad: list[str] = []
    for p in sorted(after & touched):
        if not kinds.get(p, set()) & PRESENT:
            bad.append(f"missed: {p} exists and was touched, but no create/modify/move-to")
    for p in sorted(before - after):
        if not kinds.get(p, set()) & GONE:
            bad.append(f"missed: {p} is gone, but no delete/move-from")
    for p in sorted(last):
        if p not in ever and p not in before:
            bad.append(f"invented: {p} never existed ({sorted(kinds[p])})")
        elif (p in after) != (last[p] in PRESENT):
            bad.append(f"wrong last event for {p}: {last[p]} but it {'exists' if p in after else 'is gone'}")
    return bad
