"""Benchmark for the inotify engine (prints figures, asserts nothing).

    PYTHONPATH=. python bench/watch.py [--dirs 20000] [--writes 500] [--no-raise-limit]

Figures:
* setup: time for ``set_root`` to watch a tree of N directories (targets: < 0.5 s for 20,000);
* latency: write -> emitted ``file.*`` event with ``debounce_ms=0`` (target: p50 < 5 ms);
* bus throughput: events per second from publish to one subscriber's handler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.events.watcher import FileWatcher, WatchSpec

LIMIT_PATH = "/proc/sys/fs/inotify/max_user_watches"


def check_watch_limit(needed: int, may_raise: bool) -> int | None:
    """Print the per-user watch limit; raise it (root only) if the tree would not fit.

    Returns the previous value when it was raised, so the caller can restore it.
    """
    try:
        limit = int(Path(LIMIT_PATH).read_text())
    except OSError:
        print("max_user_watches: unknown (no /proc)")
        return None
    print(f"fs.inotify.max_user_watches = {limit} (tree needs {needed} watches)")
    if limit >= needed + 1000:
        print("  limit is sufficient, left unchanged")
        return None
    if may_raise and os.geteuid() == 0:
        new = max(needed * 2, 65536)
        Path(LIMIT_PATH).write_text(str(new))
        print(f"  RAISED to {new} as root for this benchmark (restored afterwards)")
        return limit
    print("  WARNING: limit too low, part of the tree will be unwatched (see health())")
    return None


def make_tree(base: Path, n_dirs: int, fanout: int = 20) -> int:
    """A balanced tree of exactly ``n_dirs`` directories under ``base/src``."""
    made = 0
    level = [base / "src"]
    level[0].mkdir(parents=True)
    made = 1
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


async def bench_setup(n_dirs: int, may_raise: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        made = make_tree(base, n_dirs)
        print(f"created {made} directories in {time.perf_counter() - t0:.2f} s")
        previous = check_watch_limit(made, may_raise)
        try:
            await _time_set_root(base)
        finally:
            if previous is not None:
                Path(LIMIT_PATH).write_text(str(previous))
                print(f"  restored fs.inotify.max_user_watches = {previous}")


async def _time_set_root(base: Path) -> None:
    w = FileWatcher(lambda *_: None, debounce_ms=0)
    await w.start()
    t0 = time.perf_counter()
    w.set_root(str(base), [WatchSpec("src/")])
    dt = time.perf_counter() - t0
    h = w.health()["roots"][str(base)]
    print(
        f"setup: set_root watched {h['watched_dirs']} dirs in {dt * 1000:.0f} ms "
        f"({h['unwatched_dirs']} unwatched) -- target < 500 ms"
    )
    t0 = time.perf_counter()
    w.remove_root(str(base))
    print(f"teardown: remove_root in {(time.perf_counter() - t0) * 1000:.0f} ms")
    await w.stop()


async def bench_latency(n_writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as tmp:
        base = Path(tmp)
        (base / "src").mkdir()
        loop = asyncio.get_running_loop()
        got: asyncio.Future[float] | None = None

        def emit(etype: str, root: str, data: dict) -> None:
            if got is not None and not got.done():
                got.set_result(time.perf_counter())

        w = FileWatcher(emit, debounce_ms=0)
        await w.start()
        w.set_root(str(base), [WatchSpec("src/")])
        lat: list[float] = []
        for i in range(n_writes):
            f = base / "src" / f"f{i % 50}.txt"
            got = loop.create_future()
            t0 = time.perf_counter()
            with open(f, "w") as fh:
                fh.write("x")
            t1 = await asyncio.wait_for(got, 5)
            lat.append((t1 - t0) * 1000)
            got = None
            await asyncio.sleep(0.002)  # let trailing IN_CLOSE_WRITE flush before the next write
        await w.stop()
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"latency (debounce_ms=0, {n_writes} writes): p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
            f"max {lat[-1]:.3f} ms -- target p50 < 5 ms"
        )


async def bench_bus_throughput(n: int = 200_000) -> None:
    """Events per second through the event bus to one subscriber: publish n events, wait for all to arrive."""
    from aiwg_service.events.bus import EventBus

    bus = EventBus(None)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    def handler(_ev: object) -> None:
        nonlocal seen
        seen += 1
        if seen == n and not done.done():
            done.set_result(None)

    bus.subscribe("file.*", handler, name="bench", max_queue=n)
    await bus.start()
    t0 = time.perf_counter()
    for i in range(n):
        bus.publish("file.modify", "/proj", {"path": f"src/f{i % 1000}.py", "event_type": "modify"}, "watch")
    t_pub = time.perf_counter() - t0
    await done
    total = time.perf_counter() - t0
    await bus.stop()
    print(f"bus: {n:,} events to one subscriber in {total:.3f} s = {n / total:,.0f} events/s "
          f"(publish alone {n / t_pub:,.0f}/s)")


async def main(args: argparse.Namespace) -> None:
    await bench_setup(args.dirs, not args.no_raise_limit)
    await bench_latency(args.writes)
    await bench_bus_throughput()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=20_000)
    ap.add_argument("--writes", type=int, default=500)
    ap.add_argument("--no-raise-limit", action="store_true", help="never raise max_user_watches")
    uvloop.run(main(ap.parse_args()))
