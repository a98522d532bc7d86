"""The failure branches of a task's launch: an agent not on PATH, a log that cannot be used, a cancel that
comes before the launch. Each ends the task with a clear state and error, and nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tasks_support import make_supervisor, run

from aiwg_service.tasks.model import AgentProfile, TaskState


@pytest.fixture
def project(tmp_path: Path) -> str:
    p = tmp_path / "proj"
    p.mkdir()
    return str(p)


def test_an_agent_not_on_path_fails_the_task_before_anything_launches(tmp_path: Path, project: str) -> None:
    ghost = {"ghost": AgentProfile(kind="shell", command=["no-such-agent-aiwg-test", "{prompt}"])}

    async def main() -> tuple[TaskState, str | None]:
        sup = make_supervisor(tmp_path, profiles=ghost)
        tid = sup.submit(project, "hello", agent="ghost").id
        await sup.start()
        await sup.wait_idle()
        t = sup.store.get(tid)
        await sup.stop(grace_s=0)
        sup.store.close()
        assert t is not None
        return t.state, t.error

    state, error = run(main())
    assert state is TaskState.failed
    assert error is not None and "no-such-agent-aiwg-test" in error and "not found on PATH" in error


def test_a_log_that_cannot_be_used_fails_the_task(tmp_path: Path, project: str) -> None:
    shell = {"sh": AgentProfile(kind="shell")}
    logs = tmp_path / "logs"

    async def main() -> tuple[TaskState, str | None]:
        sup = make_supervisor(tmp_path, profiles=shell, log_dir=logs)
        await sup.start()
        if logs.is_dir():
            logs.rmdir()  # made by the supervisor; now a file stands where the log directory should be
        logs.write_text("not a directory")
        tid = sup.submit(project, f"touch {tmp_path / 'ran'}", agent="sh").id
        await sup.wait_idle()
        t = sup.store.get(tid)
        await sup.stop(grace_s=0)
        sup.store.close()
        assert t is not None
        return t.state, t.error

    state, error = run(main())
    assert state is TaskState.failed and error is not None and "cannot use log" in error, (state, error)
    assert not (tmp_path / "ran").exists()


def test_a_cancel_before_the_launch_runs_nothing(tmp_path: Path, project: str) -> None:
    shell = {"sh": AgentProfile(kind="shell")}

    async def main() -> tuple[bool, TaskState]:
        sup = make_supervisor(tmp_path, profiles=shell)
        tid = sup.submit(project, f"touch {tmp_path / 'ran'}", agent="sh").id
        cancelled = sup.cancel(tid)  # still queued: cancelled at once
        await sup.start()
        await sup.wait_idle()
        t = sup.store.get(tid)
        await sup.stop(grace_s=0)
        sup.store.close()
        assert t is not None
        return cancelled, t.state

    cancelled, state = run(main())
    assert cancelled is True and state is TaskState.cancelled
    assert not (tmp_path / "ran").exists()
