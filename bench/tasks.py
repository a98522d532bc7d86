#!/usr/bin/env python3
"""Task-runner figures (no assertions).

1. 1,000 trivial shell tasks (``true``) at max_parallel=3: tasks/s and the
   supervisor's overhead per task beyond a bare ``create_subprocess_exec`` + wait.
2. ``Store.list`` first-page (20) latency p50/p99 with 100,000 tasks stored.
3. Cost of single store transitions (each is one fsync'd transaction).
4. The same 1,000 ``true`` tasks through a real ``aiwg-service`` process over its socket
   (``task.submit`` from a client, completion seen as ``task.completed`` events on a subscription):
   tasks/s end to end, submit round trip, and the overhead per task beyond a bare spawn.

Run:  PYTHONPATH=. /work/venv/bin/python bench/tasks.py [--tasks N] [--rows N] [--no-service]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.tasks.agents import build_argv, profile_lookup
from aiwg_service.tasks.model import AgentProfile, format_time, new_task_id
from aiwg_service.tasks.store import Store
from aiwg_service.tasks.supervisor import Supervisor

SHELL = AgentProfile(kind="shell")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def raw_spawn(argv: list[str], n: int, parallel: int) -> float:
    """Seconds per process, spawn+wait only, ``parallel`` at a time (same shape as the supervisor)."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                     stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            await p.communicate()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.perf_counter() - t0) / n


async def run_tasks(n: int, parallel: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "state")
        sup = Supervisor(store, profile_lookup({"sh": SHELL}), None, max_parallel=parallel,
                         log_dir=Path(d) / "logs", default_timeout_s=60)
        await sup.start()
        proj = str(Path(d))
        t0 = time.perf_counter()
        for _ in range(n):
            sup.submit(proj, "true", agent="sh")
        t_submit = time.perf_counter() - t0
        await sup.wait_idle()
        wall = time.perf_counter() - t0
        st = store.stats()
        store.close()
    raw_true = await raw_spawn(["true"], n, parallel)
    raw_sh = await raw_spawn(build_argv(SHELL, "true"), n, parallel)
    per_task = wall / n
    print(f"{n} tasks, max_parallel={parallel}: {wall:.2f} s wall, {n / wall:.0f} tasks/s "
          f"(completed={st['completed']}, submit {t_submit / n * 1e6:.0f} us/task)")
    print(f"  raw spawn+wait at the same parallelism: 'true' {raw_true * 1e3:.2f} ms/proc, "
          f"'/bin/sh -c true' {raw_sh * 1e3:.2f} ms/proc")
    print(f"  supervisor overhead per task beyond spawn (same argv): {(per_task - raw_sh) * 1e3:.2f} ms "
          f"({per_task * 1e3:.2f} - {raw_sh * 1e3:.2f}); includes 3 fsync'd transitions and the log file")


def store_bench(rows: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        s = Store(d)
        t0 = time.time() - rows
        states = ["completed"] * 8 + ["failed", "queued"]
        data = []
        for i in range(rows):
            ts = format_time(t0 + i)
            data.append((new_task_id(), f"/home/u/src/p{i % 20}", "prompt " * 20, "claude", 0, states[i % 10],
                         ("cli", "cron", "rule", "webhook")[i % 4], ts, ts, ts, "result " * 50, 0.01))
        a = time.perf_counter()
        with s._tx() as db:
            db.executemany("INSERT INTO tasks (id, project, prompt, agent, priority, state, source, "
                           "created_at, started_at, finished_at, result, cost_usd) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", data)
        print(f"store: {rows} rows inserted in {time.perf_counter() - a:.1f} s")
        cases = {"no filter": {}, "state=failed": {"state": "failed"},
                 "project": {"project": "/home/u/src/p7"},
                 "project+state": {"project": "/home/u/src/p9", "state": "queued"},
                 "source": {"source": "cron"}}
        for name, kw in cases.items():
            lat = []
            for _ in range(300):
                a = time.perf_counter()
                s.list(limit=20, **kw)  # type: ignore[arg-type]
                lat.append(time.perf_counter() - a)
            print(f"  list first page of 20 [{name}]: p50 {statistics.median(lat) * 1e3:.3f} ms, "
                  f"p99 {pct(lat, 99) * 1e3:.3f} ms")
        _, cur = s.list(limit=20, cursor=None)
        for _ in range(2000):
            _, cur = s.list(limit=20, cursor=cur)
        lat = []
        for _ in range(300):
            a = time.perf_counter()
            s.list(limit=20, cursor=cur)
            lat.append(time.perf_counter() - a)
        print(f"  list page 2001 via cursor: p50 {statistics.median(lat) * 1e3:.3f} ms")
        a = time.perf_counter()
        s.stats()
        print(f"  stats() over {rows}: {(time.perf_counter() - a) * 1e3:.1f} ms")
        a = time.perf_counter()
        s.next_queued()
        print(f"  next_queued(): {(time.perf_counter() - a) * 1e3:.3f} ms")
        lat = []
        for _ in range(200):
            a = time.perf_counter()
            t = s.submit("/p", "x")
            lat.append(time.perf_counter() - a)
        print(f"  submit (1 fsync'd transaction): p50 {statistics.median(lat) * 1e3:.3f} ms, "
              f"p99 {pct(lat, 99) * 1e3:.3f} ms")
        lat = []
        for _ in range(200):
            a = time.perf_counter()
            s.get(t.id)
            lat.append(time.perf_counter() - a)
        print(f"  get: p50 {statistics.median(lat) * 1e6:.0f} us")
        s.close()


def service_bench(n: int, parallel: int) -> None:
    """1,000 ``task.submit`` of a shell ``true`` to a real service, ``parallel`` at a time."""
    from aiwg_service.client import Client

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "run").mkdir(mode=0o700)
        (tmp / "project").mkdir()
        (tmp / "config" / "aiwg").mkdir(parents=True)
        (tmp / "config" / "aiwg" / "daemon.json").write_text(json.dumps(
            {"daemon": {"max_parallel_actions": parallel, "stop_timeout_seconds": 0},
             "agents": {"sh": {"kind": "shell"}}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "AIWG_"))}
        env.update(XDG_RUNTIME_DIR=str(tmp / "run"), XDG_STATE_HOME=str(tmp / "state"),
                   XDG_CONFIG_HOME=str(tmp / "config"), PYTHONPATH=str(repo))
        env.pop("INVOCATION_ID", None)
        sock = tmp / "run" / "aiwg" / "daemon.sock"
        proc = subprocess.Popen([sys.executable, "-c", "from aiwg_service.main import main; main()", "run",
                                 "--project", str(tmp / "project"), "--log-level", "warning"],
                                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while not sock.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the service did not start")
                time.sleep(0.02)
            time.sleep(0.2)
            with Client(sock, 60) as sub, Client(sock, 60) as c:
                sub.call("events.subscribe", {"type": "task.completed"})
                lat = []
                t0 = time.perf_counter()
                for _ in range(n):
                    a = time.perf_counter()
                    c.call("task.submit", {"prompt": "true", "agent": "sh"})
                    lat.append(time.perf_counter() - a)
                t_submit = time.perf_counter() - t0
                done = 0
                while done < n:
                    msg = sub.read()
                    if msg.get("method") == "events.event":
                        done += 1
                wall = time.perf_counter() - t0
                st = c.call("task.stats")
        finally:
            proc.terminate()
            proc.wait(30)
    raw_sh = uvloop.run(raw_spawn(build_argv(SHELL, "true"), n, parallel))
    per_task = wall / n
    print(f"service over the socket: {n} task.submit, max_parallel={parallel}: {wall:.2f} s wall, "
          f"{n / wall:.0f} tasks/s (completed={st['completed']})")
    print(f"  task.submit round trip: p50 {statistics.median(lat) * 1e3:.2f} ms, p99 {pct(lat, 99) * 1e3:.2f} ms "
          f"({t_submit / n * 1e3:.2f} ms/submit while tasks run)")
    print(f"  overhead per task beyond a bare '/bin/sh -c true' spawn: {(per_task - raw_sh) * 1e3:.2f} ms "
          f"({per_task * 1e3:.2f} - {raw_sh * 1e3:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--no-service", action="store_true", help="skip the run through a real service")
    a = ap.parse_args()
    uvloop.run(run_tasks(a.tasks, a.parallel))
    store_bench(a.rows)
    if not a.no_service:
        service_bench(a.tasks, a.parallel)


if __name__ == "__main__":
    main()
