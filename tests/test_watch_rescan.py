"""An overflow rescan reports only what changed, and holds the loop in short slices (issue 23), through real
inotify: a tree of 20,000 files, ten of them changed after the last read, then the queue overflows."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from test_watcher import Recorder, run, until

from aiwg_service.events.watcher import FileWatcher, WatchSpec

DIRS, PER_DIR = 200, 100


def kinds(rec: Recorder) -> dict[str, set[str]]:
    """Path -> kinds reported, batches included."""
    out: dict[str, set[str]] = {}
    for t, _, d in rec.events:
        if t == "file.batch":
            for p, k in zip(d["paths"], d["path_kinds"], strict=True):
                out.setdefault(k, set()).add(p)
        elif "path" in d:
            out.setdefault(t.removeprefix("file."), set()).add(d["path"])
    return out


def test_an_overflow_rescan_reports_only_real_changes_in_slices(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(DIRS):
        d = src / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(PER_DIR):
            os.close(os.open(d / f"f{j:03d}", os.O_CREAT | os.O_WRONLY, 0o644))
    time.sleep(0.2)  # the tree's ctimes are older than the watcher's first read (and its slack)
    rec = Recorder()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=50)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        root = w._roots[str(tmp_path)]
        changed = {f"src/d{i:03d}/f000" for i in range(0, DIRS, DIRS // 10)}
        for rel in changed:
            (tmp_path / rel).write_text("changed")
        (tmp_path / "src/d000/new").write_text("new")
        os.unlink(tmp_path / "src/d001/f001")
        w._inotify.read(timeout=0)  # those events are lost
        w._inject_overflow()
        assert w.walking  # not done in the read callback: it goes on in slices
        # the loop keeps turning meanwhile
        turns = 0
        while w.walking:
            await asyncio.sleep(0)
            turns += 1
        await until(lambda: not root.pending, what="the rescan's changes to settle")
        got = kinds(rec)
        assert got.get("modify", set()) == changed  # 10 real modifies, none of the 19,990 untouched files
        assert got.get("create", set()) == {"src/d000/new"}
        assert got.get("delete", set()) == {"src/d001/f001"}
        h = w.health()
        assert h["walk_turns"] > 1 and turns >= 1, h
        # reading resumed: a change now is seen as usual
        rec.clear()
        (tmp_path / "src/d002/after").write_text("x")
        await until(lambda: "src/d002/after" in kinds(rec).get("create", set()), what="reading to resume")
        await w.stop()

    run(main)


def test_a_big_new_tree_is_walked_in_slices(tmp_path: Path) -> None:
    """A project added to the service (``slice_walks``) is walked in slices: the loop turns meanwhile, every
    directory ends up watched, and changes made during the walk are reported once it is done."""
    n_dirs = 1500
    src = tmp_path / "src"
    for i in range(n_dirs):
        (src / f"a{i % 30:02d}" / f"d{i:04d}").mkdir(parents=True)
    rec = Recorder()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=50)
        w.slice_walks = True
        w.slice_s = 0.002  # short slices, so this tree takes several on any machine
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        assert w.walking
        (src / "a00" / "during.txt").write_text("x")  # while the walk is under way
        turns = 0
        while w.walking:
            await asyncio.sleep(0)
            turns += 1
        assert turns >= 1 and w.health()["walk_turns"] > 1
        h = w.health()["roots"][str(tmp_path)]
        assert h["watched_dirs"] == n_dirs + 30 + 1 and h["unwatched_dirs"] == 0, h
        await until(lambda: "src/a00/during.txt" in kinds(rec).get("create", set()), what="the change during the walk")
        (src / "a29" / "d1499" / "after.txt").write_text("x")
        await until(lambda: "src/a29/d1499/after.txt" in kinds(rec).get("create", set()), what="the deepest dir")
        await w.stop()

    run(main)
