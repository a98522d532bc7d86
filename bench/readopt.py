#!/usr/bin/env python3
"""Re-adopting running agents after a restart (no assertions; target: 100 agents in < 1 s).

Starts N agents (``sleep``, each under its own detached runner) through a Supervisor, stops it
gracefully (the agents keep running), then times a fresh Supervisor's ``start()`` on the same store:
it probes every run (claim and exit records, /proc identity), marks them adopted in one transaction,
replays each log and starts following it.  The floor is the bare minimum any re-adoption needs: read
the N rows and check each recorded pid's /proc identity.  Then everything is stopped.

Run:  PYTHONPATH=. .venv/bin/python bench/readopt.py [--agents N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.tasks.agents import proc_identity, profile_lookup
from aiwg_service.tasks.model import AgentProfile
from aiwg_service.tasks.store import Store
from aiwg_service.tasks.supervisor import Supervisor


def supervisor(state: Path, n: int) -> Supervisor:
    return Supervisor(Store(state), profile_lookup({"sh": AgentProfile(kind="shell")}), None, max_parallel=n + 1,
                      log_dir=state / "logs", default_timeout_s=600, kill_grace_s=1.0)


async def main(n: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="aiwg-readopt-"))
    project = str(state)
    first = supervisor(state, n)
    await first.start()
    for i in range(n):
        first.submit(project, f"echo agent {i}; exec sleep 120", agent="sh")
    t0 = time.perf_counter()
    while len([t for t in first.running.values() if t.handle]) < n:
        await asyncio.sleep(0.05)
    launched = time.perf_counter() - t0
    await first.stop(0)  # graceful: the agents keep running
    first.store.close()

    # floor: read the rows, check each pid's identity
    store = Store(state)
    t0 = time.perf_counter()
    rows = store.running()
    alive = sum(1 for t in rows if t.pid and proc_identity(t.pid))
    floor = time.perf_counter() - t0
    store.close()
    assert alive == n, alive

    second = supervisor(state, n)
    t0 = time.perf_counter()
    await second.start()
    took = time.perf_counter() - t0
    adopted = sum(1 for t in second.running.values() if t.adopted)
    print(f"launched {n} agents in {launched:.2f} s ({launched / n * 1000:.1f} ms each)")
    print(f"re-adopted {adopted}/{n} running agents in {took * 1000:.1f} ms "
          f"({took / n * 1000:.2f} ms each; target < 1000 ms)")
    print(f"floor (read rows + /proc identity): {floor * 1000:.2f} ms; ratio {took / floor:.1f}x")
    await second.stop(0, stop_agents=True)
    second.store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=100)
    uvloop.run(main(ap.parse_args().agents))
