"""Tests for the inotify engine: real inotify on real files under tmp_path, on a uvloop loop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from aiwg_service.events.watcher import FileWatcher, IgnoreMatcher, WatchSpec


class Recorder:
    """The ``emit`` callback: records everything, synchronously."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __call__(self, etype: str, root: str, data: dict) -> None:
        self.events.append((etype, root, data))

    def of(self, etype: str) -> list[dict]:
        return [d for t, _, d in self.events if t == etype]

    def paths(self, etype: str) -> list[str]:
        return [d["path"] for d in self.of(etype)]

    def touched(self) -> set[str]:
        """Every path reported in any way (individual events or batches)."""
        out: set[str] = set()
        for t, _, d in self.events:
            if t == "file.batch":
                out.update(d["paths"])
            elif "path" in d:
                out.add(d["path"])
                if d.get("from_path"):
                    out.add(d["from_path"])
        return out

    def clear(self) -> None:
        self.events.clear()


def run(fn: Callable[[], Awaitable[None]]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(fn())
    finally:
        loop.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` with a deadline (the loop keeps running the watcher meanwhile)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def settle(seconds: float = 0.15) -> None:
    """Let the loop run briefly so that nothing else is pending (used for negative checks)."""
    await asyncio.sleep(seconds)


def write(p: Path, text: str = "x") -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def inotify_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                n += 1
        except OSError:
            pass
    return n


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- matcher


def test_ignore_matcher_rules() -> None:
    m = IgnoreMatcher(["*.tmp", "working/**", "build/", "/top.txt", "docs/*.md", "**/gen/*.js", "# c", ""])
    assert m.match("a.tmp", False) and m.match("x/y/a.tmp", False)
    assert m.match("working", True)  # pruned as a directory: everything below is ignored
    assert m.match("working/a/b.txt", False)
    assert not m.match("src/working/a.txt", False)  # anchored to the spec path
    assert m.match("build", True) and m.match("src/build", True)
    assert not m.match("build", False)  # trailing slash: directories only
    assert m.match("top.txt", False) and not m.match("a/top.txt", False)
    assert m.match("docs/a.md", False) and not m.match("docs/x/a.md", False)
    assert m.match("gen/a.js", False) and m.match("a/b/gen/c.js", False)
    assert not m.match("a.tmpx", False) and not m.match("src/a.py", False)
    neg = IgnoreMatcher(["*.log", "!keep.log"])
    assert neg.match("a.log", False) and not neg.match("keep.log", False)
    assert IgnoreMatcher(["file[0-9].txt"]).match("d/file3.txt", False)
    assert not IgnoreMatcher([]).match("anything", False)


# ---------------------------------------------------------------------------- basic events


def test_create_modify_delete(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=30)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src/")])
        f = tmp_path / "src" / "a.py"
        write(tmp_path / "src" / "keep.txt")  # src/ does not exist at set_root: exercises waiting
        await until(lambda: "src/keep.txt" in rec.paths("file.create"), what="keep create")
        write(f, "one")
        await until(lambda: "src/a.py" in rec.paths("file.create"), what="create")
        ev = rec.of("file.create")[-1]
        assert ev == {
            "path": "src/a.py",
            "abs_path": str(f),
            "event_type": "create",
            "spec": "src/",
        }
        assert rec.events[-1][1] == str(tmp_path)
        f.write_text("two")
        await until(lambda: "src/a.py" in rec.paths("file.modify"), what="modify")
        f.unlink()
        await until(lambda: "src/a.py" in rec.paths("file.delete"), what="delete")
        h = w.health()["roots"][str(tmp_path)]
        assert h["events"]["file.create"] == 2 and h["events"]["file.delete"] == 1
        await w.stop()

    run(main)


def test_rename_move_in_and_out(tmp_path: Path) -> None:
    rec = Recorder()
    src = tmp_path / "proj" / "src"
    outside = tmp_path / "outside"
    write(src / "a.txt")
    write(src / "sub" / "b.txt")
    write(outside / "in.txt")
    write(outside / "tree" / "x" / "deep.txt")

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=20)
        await w.start()
        w.set_root(str(tmp_path / "proj"), [WatchSpec("src/")])
        os.rename(src / "a.txt", src / "sub" / "a2.txt")
        await until(lambda: rec.of("file.move"), what="move")
        mv = rec.of("file.move")[0]
        assert mv["path"] == "src/sub/a2.txt" and mv["from_path"] == "src/a.txt"
        assert mv["event_type"] == "move"
        os.rename(src / "sub" / "b.txt", outside / "b.txt")  # move out = delete
        await until(lambda: "src/sub/b.txt" in rec.paths("file.delete"), what="move-out delete")
        os.rename(outside / "in.txt", src / "in.txt")  # move in = create
        await until(lambda: "src/in.txt" in rec.paths("file.create"), what="move-in create")
        os.rename(outside / "tree", src / "tree")  # a directory moved in: scanned and watched
        await until(lambda: "src/tree/x/deep.txt" in rec.paths("file.create"), what="dir move-in")
        write(src / "tree" / "x" / "new.txt")
        await until(lambda: "src/tree/x/new.txt" in rec.paths("file.create"), what="watch moved-in dir")
        rec.clear()
        os.rename(src / "tree", src / "renamed")  # directory renamed inside the tree
        await until(lambda: rec.of("file.move") and not w._roots[str(tmp_path / "proj")].pending)
        moves = {(d["from_path"], d["path"]) for d in rec.of("file.move")}
        assert ("src/tree/x/deep.txt", "src/renamed/x/deep.txt") in moves
        assert ("src/tree/x/new.txt", "src/renamed/x/new.txt") in moves
        write(src / "renamed" / "x" / "after.txt")
        await until(lambda: "src/renamed/x/after.txt" in rec.paths("file.create"), what="renamed dir watched")
        await w.stop()

    run(main)


def test_atomic_save_is_one_modify(tmp_path: Path) -> None:
    """Editors write a temp file and rename it over the target: one modify of the target."""
    rec = Recorder()
    write(tmp_path / "src" / "a.py", "old")

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=50)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        (tmp_path / "src" / "a.py.new").write_text("new")
        os.rename(tmp_path / "src" / "a.py.new", tmp_path / "src" / "a.py")
        (tmp_path / "src" / "b.py~").write_text("backup")  # ignored backup renamed onto a new name
        os.rename(tmp_path / "src" / "b.py~", tmp_path / "src" / "b.py")
        await until(lambda: len(rec.events) >= 2)
        await settle()
        assert sorted((t, d["path"]) for t, _, d in rec.events) == [
            ("file.create", "src/b.py"),
            ("file.modify", "src/a.py"),
        ]
        await w.stop()

    run(main)


def test_mkdir_p_deep_tree_fast(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src").mkdir()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=20, batch_threshold=10_000)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        expected = set()
        for branch in range(5):
            deep = tmp_path / "src" / f"b{branch}" / "/".join(f"l{i}" for i in range(25))
            os.makedirs(deep)
            for i in range(25):
                level = tmp_path / "src" / f"b{branch}" / "/".join(f"l{j}" for j in range(i + 1))
                (level / "f.txt").write_text("x")
                expected.add(str((level / "f.txt").relative_to(tmp_path)))
        await until(lambda: expected <= set(rec.paths("file.create")), what="all deep files")
        assert w.health()["roots"][str(tmp_path)]["watched_dirs"] == 1 + 5 * 26
        await w.stop()

    run(main)


# ---------------------------------------------------------------------------- filters


def test_ignore_and_extension_rules(tmp_path: Path) -> None:
    rec = Recorder()
    for d in ("src/working/deep", "src/build", "src/lib"):
        (tmp_path / d).mkdir(parents=True)
    spec = WatchSpec(
        "src/",
        events=("create", "delete"),
        extensions=(".ts", "js"),
        ignore=("*.tmp.ts", "working/**", "build/", "lib/gen_*.ts"),
    )

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [spec])
        watched = set(w._by_path)
        assert str(tmp_path / "src" / "working") not in watched  # ignored dirs are not even watched
        assert str(tmp_path / "src" / "build") not in watched
        for rel in (
            "src/a.ts",
            "src/b.js",
            "src/c.py",
            "src/x.tmp.ts",
            "src/lib/d.ts",
            "src/lib/gen_e.ts",
            "src/working/deep/f.ts",
            "src/build/g.ts",
            "src/newdir/h.ts",
            "src/newdir/k.tmp.ts",
        ):
            write(tmp_path / rel)
        await until(lambda: "src/newdir/h.ts" in rec.paths("file.create"), what="h.ts")
        (tmp_path / "src" / "a.ts").write_text("modified")  # modify is filtered out by events
        await settle()
        assert sorted(rec.paths("file.create")) == ["src/a.ts", "src/b.js", "src/lib/d.ts", "src/newdir/h.ts"]
        assert rec.of("file.modify") == []
        (tmp_path / "src" / "b.js").unlink()
        await until(lambda: rec.paths("file.delete") == ["src/b.js"], what="delete passes events filter")
        await w.stop()

    run(main)


def test_auto_ignores(tmp_path: Path) -> None:
    rec = Recorder()
    for d in (".git/objects", "node_modules/pkg", "src/__pycache__", ".aiwg/daemon/run", ".aiwg/flows"):
        (tmp_path / d).mkdir(parents=True)

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("."), WatchSpec(".aiwg/")])
        watched = set(w._by_path)
        for d in (".git", "node_modules", "src/__pycache__", ".aiwg/daemon"):
            assert str(tmp_path / d) not in watched, d
        assert str(tmp_path / ".aiwg" / "flows") in watched
        for rel in (
            ".git/objects/x",
            "node_modules/pkg/i.js",
            "src/__pycache__/m.pyc",
            ".aiwg/daemon/run/state.json",
            "src/.m.py.swp",
            "src/.m.py.swx",
            "src/m.py~",
            "src/.#m.py",
            "src/4913",
            "src/sub/node_modules/y.js",
            ".aiwg/flows/f.yaml",
            "src/m.py",
        ):
            write(tmp_path / rel)
        await until(lambda: {"src/m.py", ".aiwg/flows/f.yaml"} <= set(rec.paths("file.create")))
        await settle()
        assert sorted(rec.paths("file.create")) == [".aiwg/flows/f.yaml", "src/m.py"]
        await w.stop()

    run(main)


def test_symlinked_dirs_not_followed(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src" / "real").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "src", tmp_path / "src" / "real" / "loop")  # a cycle
    os.symlink(tmp_path / "elsewhere", tmp_path / "src" / "link")

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        assert w.health()["roots"][str(tmp_path)]["watched_dirs"] == 2
        write(tmp_path / "elsewhere" / "x.txt")
        write(tmp_path / "src" / "real" / "y.txt")
        await until(lambda: "src/real/y.txt" in rec.paths("file.create"))
        await settle()
        assert rec.paths("file.create") == ["src/real/y.txt"]
        await w.stop()

    run(main)


# ---------------------------------------------------------------------------- debounce / batch


def test_debounce_coalesces(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src").mkdir()
    existing = tmp_path / "src" / "existing.txt"
    doomed = tmp_path / "src" / "doomed.txt"
    existing.write_text("0")
    doomed.write_text("0")

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=300)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        for i in range(10):
            existing.write_text(str(i))
            await asyncio.sleep(0.005)
        f = tmp_path / "src" / "new.txt"
        f.write_text("a")
        f.write_text("b")  # create then modify -> create
        doomed.write_text("x")
        doomed.unlink()  # modify then delete -> delete
        tmp = tmp_path / "src" / "ephemeral.txt"
        tmp.write_text("a")
        tmp.unlink()  # create then delete -> nothing
        await asyncio.sleep(0.1)
        assert rec.events == []  # still inside the settle window
        await until(lambda: len(rec.events) >= 3, what="flush")
        await settle(0.4)
        got = sorted((t, d["path"]) for t, _, d in rec.events)
        assert got == [
            ("file.create", "src/new.txt"),
            ("file.delete", "src/doomed.txt"),
            ("file.modify", "src/existing.txt"),
        ]
        await w.stop()

    run(main)


def test_debounce_zero_is_immediate(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src").mkdir()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=2000)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")], debounce_ms=0)  # per-root override
        t0 = time.monotonic()
        (tmp_path / "src" / "a.txt").write_text("x")
        await until(lambda: rec.of("file.create"), timeout=2)
        assert time.monotonic() - t0 < 0.5
        await w.stop()

    run(main)


def test_batch_for_burst(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src").mkdir()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=100, batch_threshold=50)
        w.batch_cap = 120
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        for i in range(200):
            (tmp_path / "src" / f"f{i}.txt").write_text("x")
        await until(lambda: len(rec.of("file.batch")) == 2, what="batch parts")
        await settle(0.3)
        # one flush of 200 paths, cap 120: two parts naming every path once, same flush id
        assert [t for t, _, _ in rec.events] == ["file.batch", "file.batch"]
        b1, b2 = rec.of("file.batch")
        assert [len(b1["paths"]), len(b2["paths"])] == [120, 80]
        assert (b1["part"], b2["part"], b1["parts"], b2["parts"]) == (1, 2, 2, 2)
        assert b1["flush"] == b2["flush"]
        for b in (b1, b2):
            assert b["count"] == 200 and b["kinds"] == {"create": 200} and b["truncated"] is False
            assert b["path_kinds"] == ["create"] * len(b["paths"])
        assert set(b1["paths"]) | set(b2["paths"]) == {f"src/f{i}.txt" for i in range(200)}
        # below the threshold: individual events again
        rec.clear()
        for i in range(5):
            (tmp_path / "src" / f"f{i}.txt").write_text("y")
        await until(lambda: len(rec.of("file.modify")) == 5, what="individual modifies")
        assert not rec.of("file.batch")
        await w.stop()

    run(main)


@pytest.mark.parametrize("where", ["thread", "inline"])
def test_storm_50k_writes(tmp_path: Path, where: str) -> None:
    """50,000 writes over 2,500 files: no crash, bounded state, every path reported.

    ``inline`` writes from the loop thread, so nothing is read until the storm is over: the
    kernel queue (max_queued_events, 16384 by default) overflows for real and the rescan must
    recover every path.
    """
    rec = Recorder()
    src = tmp_path / "src"
    files = []
    for d in range(25):
        (src / f"d{d}").mkdir(parents=True)
        files += [src / f"d{d}" / f"f{i}.txt" for i in range(100)]
    for f in files[:1000]:
        f.write_text("old")  # 1,000 exist (modify), 1,500 are new (create)

    def storm() -> None:
        for rnd in range(20):
            for f in files:
                with open(f, "w") as fh:
                    fh.write(str(rnd))

    async def main() -> None:
        # A window long enough that a flush gathers more than the batch threshold even when a loaded machine
        # slows the writer to a few hundred writes/s (at 50 ms, such flushes went out as single events).
        w = FileWatcher(rec, debounce_ms=200, batch_threshold=50)
        w.batch_cap = 1_000_000  # completeness is checked through the batch path lists
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        rss0 = rss_kb()
        if where == "thread":
            await asyncio.to_thread(storm)
        else:
            storm()
        expected = {str(f.relative_to(tmp_path)) for f in files}
        root = w._roots[str(tmp_path)]
        await until(lambda: expected <= rec.touched() and not root.pending, timeout=60, what="storm")
        h = w.health()["roots"][str(tmp_path)]
        print(where, "events:", len(rec.events), h["events"], "overflows:", h["overflows"], rss_kb() - rss0)
        assert h["watched_dirs"] == 26
        if where == "inline":
            assert h["overflows"] >= 1 and rec.of("file.rescan")
        assert len(root.pending) == 0 and len(w._moves) == 0
        assert len(w._by_wd) == 26
        assert sum(len(d.files) for d in w._by_wd.values()) == 2500
        # coalescing: far fewer events than writes
        assert len(rec.events) < 5000
        assert rss_kb() - rss0 < 100_000
        await w.stop()

    run(main)


# ---------------------------------------------------------------------------- overflow


def test_overflow_rescan_reports_lost_changes(tmp_path: Path) -> None:
    rec = Recorder()
    src = tmp_path / "src"
    write(src / "keep.txt", "k")
    write(src / "mod.txt", "a")
    write(src / "gone.txt", "a")
    write(src / "old" / "inner.txt", "a")
    time.sleep(1.1)  # ctimes of the baseline become older than the watermark slack (1 s)

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        # changes whose events are then lost (drained from the fd without processing)
        (src / "mod.txt").write_text("b")
        (src / "gone.txt").unlink()
        write(src / "new.txt")
        write(src / "newdir" / "n.txt")
        shutil.rmtree(src / "old")
        w._inotify.read(timeout=0)
        w._inject_overflow()
        await until(lambda: not w._roots[str(tmp_path)].pending and len(rec.events) >= 6, what="rescan")
        await settle()
        assert rec.of("file.rescan") == [{"reason": "overflow", "event_type": "rescan"}]
        assert set(rec.paths("file.create")) == {"src/new.txt", "src/newdir/n.txt"}
        assert set(rec.paths("file.delete")) == {"src/gone.txt", "src/old/inner.txt"}
        assert set(rec.paths("file.modify")) == {"src/mod.txt"}
        h = w.health()["roots"][str(tmp_path)]
        assert h["overflows"] == 1 and h["rescans"] == 1
        assert h["watched_dirs"] == 2  # src + newdir; old/ dropped
        write(src / "newdir" / "later.txt")  # the rescanned dir is watched
        await until(lambda: "src/newdir/later.txt" in rec.paths("file.create"))
        await w.stop()

    run(main)


# ---------------------------------------------------------------------------- limits


def test_enospc_watch_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    for i in range(30):
        (tmp_path / "src" / f"d{i:02d}").mkdir(parents=True)

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        real = w._inotify.add_watch
        granted: set[str] = set()

        def limited(path: str, mask: int) -> int:
            # like the kernel: re-adding an existing watch is free, a 12th new one is refused
            if path not in granted and len(granted) >= 11:
                raise OSError(errno.ENOSPC, "No space left on device")
            granted.add(path)
            return real(path, mask)

        w._inotify.add_watch = limited
        with caplog.at_level(logging.WARNING, logger="aiwg.watcher"):
            w.set_root(str(tmp_path), [WatchSpec("src")])
            w.set_root(str(tmp_path), [WatchSpec("src")])  # reload retries, still refused
            write(tmp_path / "src" / "late" / "z.txt")
            await until(lambda: "src/late/z.txt" in rec.paths("file.create"), what="create in unwatched dir")
        h = w.health()["roots"][str(tmp_path)]
        assert h["watched_dirs"] == 11 and h["unwatched_dirs"] == 21
        assert "21 directories" in h["last_error"] and "sysctl fs.inotify.max_user_watches" in h["last_error"]
        warnings = [r for r in caplog.records if "watch limit" in r.getMessage()]
        assert len(warnings) == 1
        # watched directories keep working
        watched = sorted(p for p in w._by_path if p != str(tmp_path / "src"))[0]
        write(Path(watched) / "ok.txt")
        rel = str((Path(watched) / "ok.txt").relative_to(tmp_path))
        await until(lambda: rel in rec.paths("file.create"))
        # limit raised: a reload picks up the rest
        w._inotify.add_watch = real
        w.set_root(str(tmp_path), [WatchSpec("src")])
        h = w.health()["roots"][str(tmp_path)]
        assert h["unwatched_dirs"] == 0 and h["watched_dirs"] == 32 and h["last_error"] is None
        await w.stop()

    run(main)


# ---------------------------------------------------------------------------- lifecycle


def test_watched_dir_deleted_and_recreated(tmp_path: Path) -> None:
    rec = Recorder()
    write(tmp_path / "src" / "sub" / "a.txt")

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        shutil.rmtree(tmp_path / "src" / "sub")
        await until(lambda: "src/sub/a.txt" in rec.paths("file.delete"))
        write(tmp_path / "src" / "sub" / "b.txt")
        await until(lambda: "src/sub/b.txt" in rec.paths("file.create"), what="inner dir re-created")
        # the spec's own top directory
        shutil.rmtree(tmp_path / "src")
        await until(lambda: "src/sub/b.txt" in rec.paths("file.delete"))
        await until(lambda: w.health()["roots"][str(tmp_path)]["specs"][0]["state"] == "waiting")
        write(tmp_path / "src" / "c.txt")
        await until(lambda: "src/c.txt" in rec.paths("file.create"), what="top dir re-created")
        write(tmp_path / "src" / "d.txt")
        await until(lambda: "src/d.txt" in rec.paths("file.create"), what="top dir watched again")
        await w.stop()

    run(main)


def test_spec_path_created_after_start(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path / "proj"), [WatchSpec("src/app/")])  # neither proj nor src exist
        assert w.health()["roots"][str(tmp_path / "proj")]["specs"][0]["state"] == "waiting"
        (tmp_path / "proj" / "src" / "app" / "x" / "y").mkdir(parents=True)
        (tmp_path / "proj" / "src" / "app" / "x" / "y" / "f.ts").write_text("x")
        (tmp_path / "proj" / "src" / "other.ts").write_text("x")  # outside the spec
        await until(lambda: "src/app/x/y/f.ts" in rec.paths("file.create"))
        write(tmp_path / "proj" / "src" / "app" / "g.ts")
        await until(lambda: "src/app/g.ts" in rec.paths("file.create"))
        assert "src/other.ts" not in rec.touched()
        assert w.health()["roots"][str(tmp_path / "proj")]["specs"][0]["state"] == "active"
        # waiting watches on the ancestors are released once active
        assert str(tmp_path) not in w._by_path and str(tmp_path / "proj") not in w._by_path
        await w.stop()

    run(main)


def test_set_root_reload_diffs_watches(tmp_path: Path) -> None:
    rec = Recorder()
    for d in ("a/x", "b/y", "c"):
        (tmp_path / d).mkdir(parents=True)

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("a"), WatchSpec("c")])
        assert set(w._by_path) == {str(tmp_path / p) for p in ("a", "a/x", "c")}
        c_wd = w._by_path[str(tmp_path / "c")].wd
        w.set_root(str(tmp_path), [WatchSpec("b"), WatchSpec("c")])
        assert set(w._by_path) == {str(tmp_path / p) for p in ("b", "b/y", "c")}
        assert w._by_path[str(tmp_path / "c")].wd == c_wd  # unchanged spec kept its watch
        write(tmp_path / "a" / "x" / "old.txt")
        write(tmp_path / "b" / "y" / "new.txt")
        await until(lambda: "b/y/new.txt" in rec.paths("file.create"))
        await settle()
        assert "a/x/old.txt" not in rec.touched()
        w.set_root(str(tmp_path), [WatchSpec("b"), WatchSpec("c")], enabled=False)
        assert w._by_path == {} and w.health()["roots"][str(tmp_path)]["enabled"] is False
        w.set_root(str(tmp_path), [WatchSpec("b", extensions=(".md",))])
        assert set(w._by_path) == {str(tmp_path / p) for p in ("b", "b/y")}
        w.remove_root(str(tmp_path))
        assert w._by_path == {} and w.health()["roots"] == {}
        await w.stop()

    run(main)


def test_overlapping_roots_share_watches(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "mono" / "pkg" / "src").mkdir(parents=True)

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=10)
        await w.start()
        w.set_root(str(tmp_path / "mono"), [WatchSpec(".")])
        w.set_root(str(tmp_path / "mono" / "pkg"), [WatchSpec("src")])
        write(tmp_path / "mono" / "pkg" / "src" / "m.py")
        await until(lambda: len(rec.of("file.create")) == 2)
        assert {(r, d["path"]) for t, r, d in rec.events} == {
            (str(tmp_path / "mono"), "pkg/src/m.py"),
            (str(tmp_path / "mono" / "pkg"), "src/m.py"),
        }
        w.remove_root(str(tmp_path / "mono"))
        assert str(tmp_path / "mono" / "pkg" / "src") in w._by_path
        await w.stop()

    run(main)


def test_stop_closes_fd_and_is_restartable(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "src").mkdir()
    before = inotify_fds()

    async def main() -> None:
        w = FileWatcher(rec, debounce_ms=500)
        await w.start()
        w.set_root(str(tmp_path), [WatchSpec("src")])
        assert inotify_fds() == before + 1
        (tmp_path / "src" / "a.txt").write_text("x")
        await until(lambda: w._roots[str(tmp_path)].pending)
        await w.stop()
        assert inotify_fds() == before
        assert w.health()["running"] is False and w._roots[str(tmp_path)].timer is None
        await asyncio.sleep(0.6)
        assert rec.events == []  # stop() flushes nothing
        await w.start()  # configured roots come back
        (tmp_path / "src" / "b.txt").write_text("x")
        await until(lambda: "src/b.txt" in rec.paths("file.create"))
        await w.stop()
        assert inotify_fds() == before

    run(main)
