"""Crash recovery: kill -9 the service side mid-task, recover in a new process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiwg_service.tasks.agents import kill_orphan_group, proc_identity
from aiwg_service.tasks.model import TaskState
from aiwg_service.tasks.store import Store
from tests.tasks_support import Events, kill_quiet, make_fakebin, pid_alive, read_pid, wait_for

DRIVER = Path(__file__).resolve().parent / "tasks_driver.py"


@pytest.mark.parametrize("retry", [1, 0])
def test_kill9_mid_task_then_recover(tmp_path: Path, retry: int) -> None:
    b = make_fakebin(tmp_path)
    env = {**os.environ, "PATH": f"{b}:/usr/local/bin:/usr/bin:/bin"}
    state, proj = tmp_path / "state", tmp_path / "proj"
    proj.mkdir()
    pidfile = tmp_path / "gc.pid"
    drv = subprocess.Popen([sys.executable, str(DRIVER), "crash", str(state), str(proj),
                            f"spawn-grandchild pidfile={pidfile} sleep=120", str(retry)],
                           env=env, stdout=subprocess.PIPE, text=True)
    leader = gc = 0
    try:
        assert drv.stdout is not None
        task_id = drv.stdout.readline().strip()
        assert task_id.startswith("t-")
        gc = read_pid(pidfile)
        # the transition to running is committed right after spawn
        probe = sqlite3.connect(state / "tasks.db")
        assert wait_for(lambda: probe.execute("SELECT state FROM tasks").fetchone()[0] == "running")
        leader = probe.execute("SELECT pid FROM tasks").fetchone()[0]
        probe.close()
        os.kill(drv.pid, signal.SIGKILL)
        drv.wait(10)
        assert pid_alive(leader) and pid_alive(gc), "the agent should outlive the crashed service"

        ev = Events()
        store = Store(state, ev)
        assert store.integrity_check() == "ok"
        recovered = store.recover(lambda agent: retry)
        assert [t.id for t in recovered] == [task_id]
        assert wait_for(lambda: not pid_alive(leader) and not pid_alive(gc), 5), "orphaned group not killed"
        tasks, _ = store.list()
        assert [t.id for t in tasks] == [task_id]  # nothing lost, nothing duplicated
        t = tasks[0]
        assert t.interruptions == 1 and t.attempts == 1
        if retry:
            assert t.state is TaskState.queued and t.pid is None
            assert ev.types(task_id) == ["task.interrupted", "task.queued"]
        else:
            assert t.state is TaskState.failed and t.error == "interrupted"
            assert ev.types(task_id) == ["task.interrupted", "task.failed"]
        assert store.integrity_check() == "ok"
        # recovery is idempotent
        assert store.recover(lambda agent: retry) == []
        store.close()
    finally:
        if drv.poll() is None:
            drv.kill()
        for p in (leader, gc):
            if p:
                kill_quiet(p)


def test_orphan_kill_checks_identity(tmp_path: Path) -> None:
    """A pid whose start time differs from the recorded one (recycled pid) is left alone."""
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        ident = proc_identity(p.pid)
        assert ident is not None
        boot, ticks = ident.rsplit(":", 1)
        assert kill_orphan_group(p.pid, f"{boot}:{int(ticks) + 1}") is False
        assert kill_orphan_group(p.pid, None) is False
        time.sleep(0.1)
        assert p.poll() is None
        assert kill_orphan_group(p.pid, ident, grace_s=1) is True
        assert p.wait(5) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
