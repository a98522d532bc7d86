"""The longest event-loop stall during the service's own heavy work (prints figures, asserts nothing).

    PYTHONPATH=. python bench/loop.py [--baseline /path/to/a/main/checkout] [--dirs 100000] [--files 100000]
                                      [--letters 1000] [--tasks 20000] [--only NAME ...]

A 10 ms probe timer runs on the loop (the same measure as ``daemon.status``'s ``loop``: how late it fires)
while each scenario runs, in-process, with the real parts:
* project add: the watcher's ``set_root`` on a tree of N directories (real inotify);
* file storm: N files created in a watched tree by another process, until the watcher has gone quiet;
* dead letters: N dead letters, one per loop turn, on a bus persisting them to a temp dir;
* prune: the task store's daily prune of N finished tasks (and their log files) past retention.

``--baseline DIR`` runs the same scenarios against another checkout (e.g. ``git worktree add /tmp/base
main``) in the same run, and prints both side by side with the ratio. Target: under 50 ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0
LIMIT_PATH = "/proc/sys/fs/inotify/max_user_watches"


class Probe:
    """How late a 10 ms timer fires: the longest lateness while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + 0.010
            await asyncio.sleep(0.010)
            self.worst = max(self.worst, time.monotonic() - due)
            self.samples += 1

    def __enter__(self) -> Probe:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def measure(work: Callable[[], Awaitable[None]]) -> dict[str, float]:
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    with Probe() as probe:
        await asyncio.sleep(0.03)  # the probe is ticking before the work starts
        await work()
        await asyncio.sleep(0.03)  # and sees the loop after it
    return {"stall_ms": round(probe.worst * 1000, 1), "wall_s": round(time.perf_counter() - t0, 2)}


# -- scenarios (run in a child process, against whichever checkout PYTHONPATH names) -------------------------------
def make_tree(base: Path, n_dirs: int, fanout: int = 20) -> int:
    level, made = [base / "src"], 1
    level[0].mkdir(parents=True)
    while made < n_dirs:
        nxt = []
        for parent in level:
            for i in range(fanout):
                if made >= n_dirs:
                    break
                d = parent / f"d{i}"
                d.mkdir()
                nxt.append(d)
                made += 1
        level = nxt
    return made


async def project_add(tmp: Path, n: int) -> dict[str, float]:
    from aiwg_service.events.watcher import FileWatcher, WatchSpec

    make_tree(tmp, n)
    w = FileWatcher(lambda *_: None, debounce_ms=0)
    await w.start()

    async def work() -> None:
        w.set_root(str(tmp), [WatchSpec("src/")])
        # a sliced walk goes on after set_root returns: wait until every directory is watched
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            h = w.health()["roots"][str(tmp)]
            if h["watched_dirs"] + h["unwatched_dirs"] >= n:
                return
            await asyncio.sleep(0.05)

    try:
        return await measure(work)
    finally:
        w.remove_root(str(tmp))
        await w.stop()


async def file_storm(tmp: Path, n: int) -> dict[str, float]:
    from aiwg_service.events.watcher import FileWatcher, WatchSpec

    for i in range(100):
        (tmp / "src" / f"d{i}").mkdir(parents=True)
    seen = [0.0]

    def emit(*_a: object) -> None:
        seen[0] = time.monotonic()

    w = FileWatcher(emit, debounce_ms=50)
    await w.start()
    w.set_root(str(tmp), [WatchSpec("src/")])
    script = ("import os, sys\nb = sys.argv[1]\nn = int(sys.argv[2])\n"
              "for i in range(n):\n    fd = os.open(f'{b}/src/d{i % 100}/f{i}.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n"
              "    os.write(fd, b'x')\n    os.close(fd)\n")

    async def work() -> None:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(tmp), str(n))
        await proc.wait()
        seen[0] = time.monotonic()
        while time.monotonic() - seen[0] < 1.0:  # quiet for a second: every event handled
            await asyncio.sleep(0.1)

    try:
        return await measure(work)
    finally:
        w.remove_root(str(tmp))
        await w.stop()


async def dead_letters(tmp: Path, n: int) -> dict[str, float]:
    from aiwg_service.events.bus import EventBus

    bus = EventBus(tmp / "deadletters.json")
    await bus.start()
    ev = bus.publish("webhook.github", "/p", {"payload": {"ref": "refs/heads/main", "body": "x" * 1500}}, "bench")

    async def work() -> None:
        for i in range(n):
            bus.dead_letter(ev, "messaging.telegram", f"SendError: {i}", 4)
            await asyncio.sleep(0)  # one per loop turn, as failures arrive

    try:
        return await measure(work)
    finally:
        await bus.stop()


async def prune(tmp: Path, n: int) -> dict[str, float]:
    from aiwg_service import config, schemas  # noqa: F401  (registers every section)
    from aiwg_service.tasks.api import TaskHub
    from aiwg_service.tasks.store import Store
    from aiwg_service.tasks.subsystems import StoreSubsystem

    state = tmp / "state"
    logs = tmp / "logs"
    logs.mkdir()
    store = Store(state)
    tmpl = store.submit("/p", "a prompt of average length " * 4)
    store.close()
    db = sqlite3.connect(state / "tasks.db")
    cols = [r[1] for r in db.execute("PRAGMA table_info(tasks)")]
    row = dict(zip(cols, db.execute("SELECT * FROM tasks WHERE id = ?", (tmpl.id,)).fetchone(), strict=True))
    rows = []
    for i in range(n):
        lp = logs / f"t{i}.log"
        lp.write_bytes(b"log\n")
        rows.append({**row, "id": f"bench{i:06d}", "state": "completed", "finished_at": "2000-01-01T00:00:00Z",
                     "log_path": str(lp)})
    db.execute("DELETE FROM tasks")
    db.executemany(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [tuple(r[c] for c in cols) for r in rows])
    db.commit()
    db.close()
    configs = config.Configs(config.Config(), [], {})
    sub = StoreSubsystem(state, lambda: configs, TaskHub(lambda *_a: None))

    async def work() -> None:
        await sub.start()  # prunes at start, then daily
        deadline = time.monotonic() + 120
        while any(logs.iterdir()) and time.monotonic() < deadline:  # a sliced prune goes on after start
            await asyncio.sleep(0.05)

    try:
        return await measure(work)
    finally:
        await sub.stop()


SCENARIOS: dict[str, tuple[Callable[[Path, int], Awaitable[dict[str, float]]], str]] = {
    "project add": (project_add, "dirs"),
    "file storm": (file_storm, "files"),
    "dead letters": (dead_letters, "letters"),
    "prune": (prune, "tasks"),
}


def child(args: argparse.Namespace) -> None:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    out = {}
    for name in args.only or SCENARIOS:
        fn, knob = SCENARIOS[name]
        with tempfile.TemporaryDirectory(prefix="aiwg-bench-loop-") as tmp:
            out[name] = runner(fn(Path(tmp), getattr(args, knob)))
    print(json.dumps(out))


def run_checkout(checkout: Path, argv: list[str]) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *argv], env=env,
                         capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"bench in {checkout} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, help="another checkout to measure in the same run (e.g. main)")
    ap.add_argument("--dirs", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--letters", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--only", nargs="*", choices=list(SCENARIOS))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with open(LIMIT_PATH) as f:
        limit = int(f.read())
    if limit < args.dirs + 1000:
        print(f"fs.inotify.max_user_watches={limit} is below {args.dirs} directories: part of the tree stays "
              f"unwatched (raise it, or pass --dirs)")
    argv = [a for a in sys.argv[1:] if a != "--baseline" and a != str(args.baseline)]
    ours = run_checkout(REPO, argv)
    base = run_checkout(args.baseline, argv) if args.baseline else {}
    sizes = {"project add": f"{args.dirs:,} dirs", "file storm": f"{args.files:,} files",
             "dead letters": f"{args.letters:,} letters", "prune": f"{args.tasks:,} tasks"}
    print(f"{'scenario':<14}{'size':>16}{'longest stall':>16}{'baseline':>12}{'ratio':>8}  target < {TARGET_MS:g} ms")
    for name, fig in ours.items():
        b = base.get(name)
        ratio = f"{b['stall_ms'] / fig['stall_ms']:.1f}x" if b and fig["stall_ms"] > 0 else "-"
        base_stall = f"{b['stall_ms']} ms" if b else "-"
        base_wall = f", baseline {b['wall_s']} s" if b else ""
        verdict = "ok" if fig["stall_ms"] < TARGET_MS else "OVER"
        print(f"{name:<14}{sizes[name]:>16}{fig['stall_ms']:>13.1f} ms{base_stall:>12}{ratio:>8}  "
              f"{verdict} (wall {fig['wall_s']} s{base_wall})")


if __name__ == "__main__":
    main()
