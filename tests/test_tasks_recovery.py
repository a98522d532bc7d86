"""Crash recovery: kill -9 the service side mid-task, recover in a new process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aiwg_service.tasks.agents import kill_orphan_group, proc_identity
from aiwg_service.tasks.model import TaskState
from aiwg_service.tasks.store import Store
from tests.tasks_support import Events, pid_alive, read_pid, wait_for


@pytest.mark.parametrize("retry", [1, 0])
def test_legacy_row_after_kill9_is_recovered(tmp_path: Path, retry: int) -> None:
    """A row an older version left 'running' (its agent a child process group of the dead service,
    no executor handle) still gets the old recovery: its group is killed, then it is re-queued per
    retry or failed.  (Runs started through an executor are re-adopted instead: test_agents_*.)"""
    state = tmp_path / "state"
    pidfile = tmp_path / "gc.pid"
    leader = subprocess.Popen(["sh", "-c", f"sleep 120 & echo $! > {pidfile}; sleep 120"], start_new_session=True)
    try:
        gc = read_pid(pidfile)
        store = Store(state)
        t = store.submit(str(tmp_path), "old")
        store.mark_started(t.id, pid=leader.pid, pid_start=proc_identity(leader.pid), log_path=None)
        task_id = t.id
        store.close()

        ev = Events()
        store = Store(state, ev)
        assert store.integrity_check() == "ok"
        recovered = store.recover(lambda agent: retry)
        assert [x.id for x in recovered] == [task_id]
        leader.wait(5)
        assert wait_for(lambda: not pid_alive(gc), 5), "orphaned group not killed"
        tasks, _ = store.list()
        assert [x.id for x in tasks] == [task_id]  # nothing lost, nothing duplicated
        t = tasks[0]
        assert t.interruptions == 1 and t.attempts == 1
        if retry:
            assert t.state is TaskState.queued and t.pid is None
            assert ev.types(task_id) == ["task.interrupted", "task.queued"]
        else:
            assert t.state is TaskState.failed and t.error == "interrupted"
            assert ev.types(task_id) == ["task.interrupted", "task.failed"]
        assert store.recover(lambda agent: retry) == []  # idempotent
        store.close()
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()


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
