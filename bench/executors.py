#!/usr/bin/env python3
"""Executor figures (no assertions): what running a task elsewhere costs, against running it here.

1. Overhead per task on each executor (``local`` detached runner = the floor, ``slurm`` on a private
   single-node cluster, ``ssh`` to a private sshd on loopback), with the fake claude as the agent:
   - *submit to start*: ``start()`` called -> the agent's first output line is in the task's log;
   - *end to recorded*: the runner's recorded end time -> ``wait()`` returns the exit info.
   Printed as medians and as the ratio to local.
2. The same through the real service: ``task.submit {wait: true}`` of a fake-claude task routed to each
   executor by its profile, wall time from submit to the recorded result (median), against local.
3. Polling cost with 200 Slurm jobs queued (held with ``--begin``, so they stay queued): ``squeue``
   calls per minute made by one executor with 200 waiters, against the floor a per-job poller would
   need at the same spacing (200 per tick).

Needs root (the Slurm cluster's network namespace, sshd).  Run:
    PYTHONPATH=. .venv/bin/python bench/executors.py [--tasks N] [--jobs N] [--poll-window S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from service_fixture import ServiceEnv  # noqa: E402
from slurm_env import SlurmCluster  # noqa: E402
from sshd_env import SshServer  # noqa: E402

from aiwg_service.executors.base import LaunchSpec  # noqa: E402
from aiwg_service.executors.local import LocalExecutor  # noqa: E402
from aiwg_service.executors.schema import SlurmExecutorConfig, SshExecutorConfig  # noqa: E402
from aiwg_service.executors.slurm import SlurmExecutor  # noqa: E402
from aiwg_service.executors.ssh import SshExecutor  # noqa: E402

FAKE = str(REPO / "tests" / "fake_claude.py")


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def one(ex: object, tmp: Path, i: int) -> tuple[float, float]:
    task = f"t-bench{i:04d}"
    log = tmp / "logs" / f"{task}.log"
    spec = LaunchSpec(task_id=task, argv=[sys.executable, FAKE, "-p", "hello"], cwd=str(tmp),
                      env={"PATH": os.environ["PATH"], "AIWG_TASK_ID": task}, log_path=str(log))
    t0 = time.time()
    handle = await ex.start(spec)  # type: ignore[attr-defined]
    waiter = asyncio.create_task(ex.wait(handle))  # type: ignore[attr-defined]
    while not (log.exists() and log.stat().st_size > 0):
        await asyncio.sleep(0.002)
    t_first = time.time()
    info = await waiter
    t_rec = time.time()
    assert info.exit_code == 0, info
    end = ts(info.finished_at) if info.finished_at else t_rec
    await ex.forget(handle)  # type: ignore[attr-defined]
    return t_first - t0, max(0.0, t_rec - end)


async def overhead(name: str, ex: object, tmp: Path, n: int) -> tuple[float, float]:
    (tmp / "logs").mkdir(exist_ok=True)
    await one(ex, tmp, 9999)  # warm-up (connection, runner copy)
    starts, ends = [], []
    for i in range(n):
        s, e = await one(ex, tmp, i)
        starts.append(s)
        ends.append(e)
    await ex.close()  # type: ignore[attr-defined]
    return statistics.median(starts), statistics.median(ends)


def through_service(tmp: Path, cluster: SlurmCluster, sshd: SshServer, n: int) -> dict[str, float]:
    env = ServiceEnv(tmp)
    env.env["PATH"] = f"{cluster.bin_dir}:{env.env['PATH']}"
    cfg = env.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, FAKE, "-p", "{prompt}"]
    cfg.write_text(json.dumps({
        "executors": {"cluster": {"kind": "slurm", "poll_min_seconds": 0.5, "poll_max_seconds": 2},
                      "box": {"kind": "ssh", "host": sshd.alias, "ssh_config": str(sshd.ssh_config),
                              "remote_state_dir": str(tmp / "remote")}},
        "agents": {name: {"kind": "command", "command": cmd, "executor": name} for name in ("local", "cluster", "box")},
    }))
    env.start()
    out = {}
    try:
        for name in ("local", "cluster", "box"):
            times = []
            for i in range(n + 1):
                t0 = time.perf_counter()
                res = env.call("task.submit", {"prompt": f"hello {i}", "agent": name, "wait": True})
                assert res["state"] == "completed", res
                if i:  # the first one warms up (connection, runner copy)
                    times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times)
    finally:
        env.stop()
    return out


async def floors(cluster: SlurmCluster, sshd: SshServer, tmp: Path, n: int) -> dict[str, float]:
    """What the engines cost by themselves: a bare ``sbatch --wrap`` to its first output, and one more
    command over an open ssh connection."""
    out: dict[str, float] = {}
    times = []
    for i in range(n):
        f = tmp / f"floor{i}.out"
        t0 = time.time()
        cluster.run("sbatch", "--parsable", f"--output={f}", "--wrap", "echo x")
        while not (f.exists() and f.stat().st_size):
            await asyncio.sleep(0.002)
        times.append(time.time() - t0)
    out["slurm"] = statistics.median(times)
    ex = SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(sshd.ssh_config),
                                              remote_state_dir=str(tmp / "floor-remote")))
    conn = await ex.connection()
    times = []
    for _ in range(n):
        t0 = time.time()
        await conn.run("echo x", check=True)
        times.append(time.time() - t0)
    out["ssh"] = statistics.median(times)
    await ex.close()
    return out


async def polling(cluster: SlurmCluster, tmp: Path, jobs: int, window: float) -> tuple[int, float, float]:
    cfg = SlurmExecutorConfig(extra_args=["--begin=now+1hour"])  # defaults: 3 s .. 30 s spacing
    ex = SlurmExecutor("cluster", cfg, tmp, environ={"PATH": f"{cluster.bin_dir}:/usr/bin:/bin"})
    (tmp / "logs").mkdir(exist_ok=True)
    handles = []
    for i in range(jobs):
        spec = LaunchSpec(task_id=f"t-q{i:04d}", argv=["true"], cwd=str(tmp), env={},
                          log_path=str(tmp / "logs" / f"q{i}.log"))
        handles.append(await ex.start(spec))
    waiters = [asyncio.create_task(ex.wait(h)) for h in handles]
    await asyncio.sleep(0.5)
    before, t0 = ex.poller.calls, time.monotonic()
    await asyncio.sleep(window)
    calls, elapsed = ex.poller.calls - before, time.monotonic() - t0
    interval = ex.poller.interval
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    cluster.run("scancel", f"--user={os.environ.get('USER') or 'root'}", check=False)
    await ex.close()
    return calls, elapsed, interval


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--poll-window", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-") as d, SlurmCluster(cpus=8) as cluster, \
            SshServer() as sshd:
        tmp = Path(d)
        results = {}
        for name in ("local", "slurm", "ssh"):
            sub = tmp / name
            sub.mkdir()
            if name == "local":
                ex: object = LocalExecutor(sub, use_systemd=False)
            elif name == "slurm":
                ex = SlurmExecutor("cluster", SlurmExecutorConfig(poll_min_seconds=0.5, poll_max_seconds=2.0), sub,
                                   environ={"PATH": f"{cluster.bin_dir}:/usr/bin:/bin"})
            else:
                ex = SshExecutor("box", SshExecutorConfig(host=sshd.alias, ssh_config=str(sshd.ssh_config),
                                                          remote_state_dir=str(sub / "remote")))
            results[name] = await overhead(name, ex, sub, args.tasks)
        base_s, base_e = results["local"]
        print(f"overhead per task, median of {args.tasks} fake-claude tasks (ratio to local):")
        print(f"  {'executor':<8} {'submit->start':>14} {'end->recorded':>14}")
        for name, (s, e) in results.items():
            print(f"  {name:<8} {s * 1000:11.1f} ms ({s / base_s:5.1f}x) {e * 1000:8.1f} ms "
                  f"({e / base_e if base_e else float('nan'):5.1f}x)")
        print("  (slurm end->recorded: the exit record is seen by inotify; on NFS it waits for the next squeue)")
        fdir = tmp / "floor"
        fdir.mkdir()
        fl = await floors(cluster, sshd, fdir, args.tasks)
        print(f"  floors: bare sbatch --wrap to first output {fl['slurm'] * 1000:.1f} ms (slurm submit->start is "
              f"{results['slurm'][0] / fl['slurm']:.2f}x it); one command over an open ssh connection "
              f"{fl['ssh'] * 1000:.1f} ms (ssh submit->start is {results['ssh'][0] / fl['ssh']:.1f} round trips'"
              " worth)")
        (tmp / "svc").mkdir()
        svc = through_service(tmp / "svc", cluster, sshd, args.tasks)
        print(f"through the service: task.submit(wait) -> completed, median of {args.tasks} (ratio to local):")
        for name, t in svc.items():
            print(f"  {name:<8} {t * 1000:9.1f} ms ({t / svc['local']:5.1f}x, +{(t - svc['local']) * 1000:.0f} ms)")
        pdir = tmp / "poll"
        pdir.mkdir()
        calls, elapsed, interval = await polling(cluster, pdir, args.jobs, args.poll_window)
        per_min = calls * 60.0 / elapsed
        naive = args.jobs * 60.0 / 3.0  # one squeue per job per 3 s tick
        print(f"polling with {args.jobs} jobs queued, default config (3 s .. 30 s): {per_min:.1f} squeue calls/min "
              f"over {elapsed:.0f} s (interval now {interval:.1f} s); a per-job poller at 3 s: {naive:.0f}/min "
              f"-> {naive / per_min if per_min else float('inf'):.0f}x fewer")


if __name__ == "__main__":
    asyncio.run(main())
