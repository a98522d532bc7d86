#!/usr/bin/env python3
"""Sandbox figures (no assertions): what confining an agent costs, and how exposed its unit is.

1. *Submit to agent exec*, with and without the sandbox, in the same run, interleaved: ``start()`` called ->
   the agent's first instruction runs (it prints ``time.time()`` first thing; the agent is ``/bin/sh -c`` with
   a ``date``, the same both ways).  Medians, the difference (the sandbox must cost < 15 ms) and the ratio.
   - systemd: the transient unit ``aiwg-task-<id>.service`` with and without the policy's properties, under
     a private user manager (tests/systemd_env.py);
   - bubblewrap: the foreground runner with and without the ``bwrap`` prefix.
2. ``systemd-analyze security`` of a running agent unit, without and with the sandbox (<= 4.0 from 9.8).

Needs root (the private user manager).  Run:
    PYTHONPATH=. .venv/bin/python bench/sandbox.py [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from systemd_env import UserManager  # noqa: E402

from aiwg_service.executors.base import LaunchSpec  # noqa: E402
from aiwg_service.executors.local import LocalExecutor, unit_name  # noqa: E402
from aiwg_service.sandbox import SandboxSection, resolve  # noqa: E402

AGENT = ["/bin/sh", "-c", "date +%s.%N; exec sleep \"$0\"", "0"]


def policy_for(tmp: Path, kind: str = "shell"):
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    return resolve(SandboxSection(), kind=kind, cwd=str(tmp / "project"), home=str(home),
                   service_dirs=[str(tmp / "state")], other_projects=[str(tmp / "other")])


async def one(ex: LocalExecutor, tmp: Path, task: str, confined: bool, sleep: str = "0") -> float:
    log = tmp / f"{task}.log"
    spec = LaunchSpec(task_id=task, argv=[*AGENT[:3], sleep], cwd=str(tmp / "project"),
                      env={"PATH": os.environ["PATH"]}, log_path=str(log),
                      sandbox=policy_for(tmp) if confined else None)
    t0 = time.time()
    handle = await ex.start(spec)
    await ex.wait(handle)
    await ex.forget(handle)
    first = log.read_text().split()[0]
    return (float(first) - t0) * 1000


async def latency(ex: LocalExecutor, tmp: Path, n: int, tag: str) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    boxed: list[float] = []
    for i in range(n):
        for confined, out in ((False, plain), (True, boxed)):
            out.append(await one(ex, tmp, f"t-{tag}{'b' if confined else 'p'}{i:03d}", confined))
    return plain, boxed


def report(name: str, plain: list[float], boxed: list[float]) -> None:
    p, b = statistics.median(plain), statistics.median(boxed)
    lo_p, lo_b = min(plain), min(boxed)
    print(f"{name:<11} submit->exec median: without {p:7.1f} ms, with {b:7.1f} ms; "
          f"sandbox costs {b - p:+6.1f} ms (ratio {b / p:.2f}; budget < 15 ms: {'ok' if b - p < 15 else 'OVER'}); "
          f"best case {lo_p:.1f} -> {lo_b:.1f} ms ({lo_b - lo_p:+.1f})")


async def score(sd: UserManager, tmp: Path, confined: bool, tag: str) -> str:
    ex = LocalExecutor(tmp / "state", use_systemd=True, environ=sd.env)
    task = f"t-score{tag}"
    spec = LaunchSpec(task_id=task, argv=[*AGENT[:3], "60"], cwd=str(tmp / "project"),
                      env={"PATH": os.environ["PATH"]}, log_path=str(tmp / f"{task}.log"),
                      sandbox=policy_for(tmp, "claude") if confined else None)
    handle = await ex.start(spec)
    try:
        sd.wait_for(lambda: sd.show(unit_name(task), "ActiveState").get("ActiveState") == "active", timeout=30,
                    message="the agent unit never ran")
        out = sd.run(["systemd-analyze", "security", "--user", "--no-pager", unit_name(task)], as_user=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+ \S+)", out.stdout)
        return m.group(1) if m else f"? ({out.stderr.strip()[-200:]})"
    finally:
        await ex.cancel(handle, grace_s=1)
        await ex.wait(handle)
        await ex.forget(handle)


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-sandbox-") as d:
        tmp = Path(d)
        (tmp / "project").mkdir()
        fg = LocalExecutor(tmp / "state", use_systemd=False)
        report("bubblewrap", *await latency(fg, tmp, n, "f"))
        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: medians on a shared machine "
              "carry its noise; the best case is the closest to an idle one)")
        with UserManager() as sd:
            unit = LocalExecutor(tmp / "state", use_systemd=True, environ=sd.env)
            report("systemd", *await latency(unit, tmp, n, "u"))
            before = await score(sd, tmp, False, "p")
            after = await score(sd, tmp, True, "b")
            print(f"agent unit exposure (systemd-analyze security): without {before}, with {after} (target <= 4.0)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=15, help="runs per variant and mechanism")
    asyncio.run(main(ap.parse_args().tasks))
