"""Run under ``unshare -U -r``: the watcher against a real inotify watch limit set for this user namespace.

``/proc/sys/user/max_inotify_watches`` is per user namespace, so the limit can be lowered (and raised again)
here without touching the machine's. Exits non-zero with the failed assertion on stderr.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from watch_truth import dir_count, reports

from aiwg_service.events.watcher import FileWatcher, WatchSpec

LIMIT = Path("/proc/sys/user/max_inotify_watches")


def set_limit(n: int) -> None:
    LIMIT.write_text(f"{n}\n")


async def until(cond, what: str, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def main(tmp: Path) -> None:
    events: list[tuple[str, str, dict]] = []
    src = tmp / "src"
    for i in range(30):
        (src / f"d{i:02d}").mkdir(parents=True)
    set_limit(20)
    w = FileWatcher(lambda t, r, d: events.append((t, r, d)), debounce_ms=20)
    await w.start()
    w.set_root(str(tmp), [WatchSpec("src")])

    def health() -> dict:
        return w.health()["roots"][str(tmp)]

    async def exact(step: str) -> dict:
        """The counts are true once the re-check a status read asks for has run (within a second or so:
        status never walks the unwatched trees itself)."""
        def true() -> bool:
            h = health()
            return h["watched_dirs"] == len(w._by_wd) and h["watched_dirs"] + h["unwatched_dirs"] == dir_count(tmp)

        try:
            await until(true, f"true counts at {step}", timeout=10)
        except AssertionError:
            raise AssertionError((step, health(), len(w._by_wd), dir_count(tmp))) from None
        return health()

    h = await exact("start")
    assert h["watched_dirs"] == 20 and h["unwatched_dirs"] == 11, h
    assert "max_user_watches" in h["last_error"]
    unwatched = sorted(d.path for s in w._roots[str(tmp)].specs.values() for d in s.unwatched)
    inside = Path(unwatched[0])
    # directories made inside an unwatched directory are counted and seen (files included)
    (inside / "new" / "deeper").mkdir(parents=True)
    (inside / "new" / "deeper" / "f.txt").write_text("x")
    h = await exact("mkdir inside unwatched")
    assert h["unwatched_dirs"] == 13, h
    rel = str((inside / "new" / "deeper" / "f.txt").relative_to(tmp))
    await until(lambda: (rel, "create") in reports(events), "the file in the unwatched subtree")
    # the re-check timer finds them too, without anyone asking
    (inside / "timer.txt").write_text("y")
    rel2 = str((inside / "timer.txt").relative_to(tmp))
    await until(lambda: (rel2, "create") in reports(events), "the timer's re-check", timeout=10)
    # a deleted unwatched directory stops being counted
    shutil.rmtree(unwatched[1])
    h = await exact("rmdir unwatched")
    assert h["unwatched_dirs"] == 12, h
    # deleting watched directories frees watches: the unwatched ones are watched and rescanned
    watched = sorted(p for p in w._by_path if w._by_path[p].wd >= 0 and p.startswith(str(src) + "/d"))
    for p in watched[:5]:
        shutil.rmtree(p)
    await until(lambda: health()["unwatched_dirs"] == 7 and health()["watched_dirs"] == 20, "freed watches reused")
    await exact("after freeing")
    # the limit raised, then a reload: everything is watched, and a write in a formerly unwatched dir is live
    set_limit(10_000)
    w.set_root(str(tmp), [WatchSpec("src")])
    h = await exact("limit raised + reload")
    assert h["unwatched_dirs"] == 0 and h["last_error"] is None, h
    assert w._recheck_timer is None  # nothing unwatched: no timer
    (inside / "new" / "deeper" / "live.txt").write_text("z")
    rel3 = str((inside / "new" / "deeper" / "live.txt").relative_to(tmp))
    await until(lambda: (rel3, "create") in reports(events), "a live event in a formerly unwatched dir")
    assert not [e for e in events if e[0] == "file.delete" and "deeper" in e[2].get("path", "")]
    # a root removed while part of it is unwatched leaves nothing behind (no entries, no timer)
    other = tmp / "other"
    for i in range(30):
        (other / "src" / f"e{i:02d}").mkdir(parents=True)
    set_limit(len(w._by_wd) + 10)
    w.set_root(str(other), [WatchSpec("src")])
    assert w.health()["roots"][str(other)]["unwatched_dirs"] == 21
    assert w._recheck_timer is not None
    w.remove_root(str(other))
    assert not [p for p in w._by_path if p.startswith(str(other))] and w._recheck_timer is None
    await w.stop()
    print("ok", health())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONASYNCIODEBUG", "0")
    uvloop.run(main(Path(sys.argv[1])))
