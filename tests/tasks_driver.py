#!/usr/bin/env python3
"""Service-side driver run in a subprocess by the tests.

  tasks_driver.py scope STATE_DIR PROJECT
      run two shell tasks, each in its own transient unit (one reports its cgroup,
      one times out with a grandchild) and print the finished tasks as JSON lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.tasks.agents import profile_lookup
from aiwg_service.tasks.model import AgentProfile
from aiwg_service.tasks.store import Store
from aiwg_service.tasks.supervisor import Supervisor


async def scope(state: str, project: str) -> None:
    store = Store(state)
    prof = {"sh": AgentProfile(kind="shell", memory_max="200M", cpu_quota="50%")}
    sup = Supervisor(store, profile_lookup(prof), None, log_dir=Path(state) / "logs",
                     default_timeout_s=60, use_systemd_scope=True, kill_grace_s=1.0)
    await sup.start()
    a = sup.submit(project, "cat /proc/self/cgroup; echo AIWG_TASK_ID=$AIWG_TASK_ID", agent="sh")
    b = sup.submit(project, f"sh -c 'trap \"\" TERM; echo $$ > {state}/gc.pid; exec sleep 300' & wait",
                   agent="sh", timeout_s=1.5)
    await sup.wait_idle()
    for t in (a, b):
        sys.stdout.write(msgspec.json.encode(store.get(t.id)).decode() + "\n")
    await sup.stop(0)
    store.close()


def main() -> None:
    mode = sys.argv[1]
    if mode == "scope":
        uvloop.run(scope(sys.argv[2], sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
