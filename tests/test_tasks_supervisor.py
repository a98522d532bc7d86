"""Supervisor against real processes (fake_claude.py as ``claude``) and a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aiwg_service.tasks.model import AgentProfile, TaskState
from aiwg_service.tasks.store import StoreError
from tests.tasks_support import (
    Events,
    await_for,
    kill_quiet,
    make_fakebin,
    make_supervisor,
    pid_alive,
    read_pid,
    run,
)


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    b = make_fakebin(tmp_path)
    monkeypatch.setenv("PATH", f"{b}:/usr/local/bin:/usr/bin:/bin")
    return b


@pytest.fixture
def project(tmp_path: Path) -> str:
    p = tmp_path / "proj"
    p.mkdir()
    return str(p)


def _intervals(mark: Path) -> list[tuple[float, float]]:
    starts: dict[str, float] = {}
    out = []
    for line in mark.read_text().splitlines():
        kind, pid, t = line.split()
        if kind == "start":
            starts[pid] = float(t)
        else:
            out.append((starts.pop(pid), float(t)))
    assert not starts, "a process started but never ended"
    return out


def _max_overlap(iv: list[tuple[float, float]]) -> int:
    pts = sorted([(s, 1) for s, _ in iv] + [(e, -1) for _, e in iv], key=lambda x: (x[0], x[1]))
    cur = best = 0
    for _, d in pts:
        cur += d
        best = max(best, cur)
    return best


def test_priority_order_and_fifo(tmp_path: Path, fake_path: Path, project: str) -> None:
    order = tmp_path / "order"
    shell = {"sh": AgentProfile(kind="shell")}

    async def main() -> list[str]:
        sup = make_supervisor(tmp_path, profiles=shell, max_parallel=1)
        # Submitted before start, so the scheduler sees them all at once.
        names = [("low1", 0), ("high1", 5), ("low2", 0), ("mid", 2), ("high2", 5), ("low3", 0)]
        for name, prio in names:
            sup.submit(project, f"echo {name} >> {order}", agent="sh", priority=prio)
        await sup.start()
        await sup.wait_idle()
        sup.store.close()
        return order.read_text().split()

    assert run(main()) == ["high1", "high2", "mid", "low1", "low2", "low3"]


def test_concurrency_limit_observed_by_processes(tmp_path: Path, fake_path: Path, project: str) -> None:
    mark = tmp_path / "mark"

    async def main() -> None:
        sup = make_supervisor(tmp_path, max_parallel=3)
        await sup.start()
        for _ in range(9):
            sup.submit(project, f"sleep=0.3 mark={mark}")
        await sup.wait_idle()
        st = sup.store.stats()
        assert st["completed"] == 9, st
        sup.store.close()

    run(main())
    iv = _intervals(mark)
    assert len(iv) == 9
    assert _max_overlap(iv) == 3  # reached, never exceeded


def test_per_project_limit(tmp_path: Path, fake_path: Path) -> None:
    pa, pb = tmp_path / "a", tmp_path / "b"
    pa.mkdir()
    pb.mkdir()
    ma, mb = tmp_path / "mark_a", tmp_path / "mark_b"

    async def main() -> None:
        sup = make_supervisor(tmp_path, max_parallel=4,
                              per_project_limit=lambda p: 1 if p == str(pa) else None)
        await sup.start()
        for _ in range(4):
            sup.submit(str(pa), f"sleep=0.3 mark={ma}")
        for _ in range(3):
            sup.submit(str(pb), f"sleep=0.3 mark={mb}")
        await sup.wait_idle()
        sup.store.close()

    t0 = time.monotonic()
    run(main())
    assert _max_overlap(_intervals(ma)) == 1
    assert _max_overlap(_intervals(mb)) == 3  # project b is not held back by a's limit
    assert time.monotonic() - t0 >= 1.2  # a's four ran one after the other


def test_stream_json_result_recorded(tmp_path: Path, fake_path: Path, project: str) -> None:
    ev = Events()

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev, profiles={"c": AgentProfile(model="opus-x", max_turns=4)})
        await sup.start()
        t = sup.submit(project, "hello garbage", agent="c")
        await sup.wait_idle()
        done = sup.store.get(t.id)
        assert done is not None
        assert done.state is TaskState.completed, done
        assert done.session_id and done.session_id.startswith("sess-")
        assert done.cost_usd == pytest.approx(0.0123)
        assert (done.input_tokens, done.output_tokens) == (1234, 567)
        assert (done.cache_creation_tokens, done.cache_read_tokens) == (89, 4321)
        assert done.num_turns == 3
        assert done.result == "Done: hello garbage"
        assert done.exit_code == 0 and done.signal is None and done.attempts == 1
        logtext = Path(done.log_path or "").read_text()
        assert "this is not json" in logtext and "warning: something on stderr" in logtext
        assert '"--model", "opus-x"' in logtext and '"--max-turns", "4"' in logtext
        assert ev.types(t.id) == ["task.queued", "task.started", "task.completed"]
        assert "task.session" in ev.types(t.id, transitions_only=False)
        sup.store.close()

    run(main())


def test_failure_and_error_result(tmp_path: Path, fake_path: Path, project: str) -> None:
    async def main() -> None:
        sup = make_supervisor(tmp_path)
        await sup.start()
        a = sup.submit(project, "please fail")
        b = sup.submit(project, "error-result")
        await sup.wait_idle()
        fa, fb = sup.store.get(a.id), sup.store.get(b.id)
        assert fa and fa.state is TaskState.failed and fa.exit_code == 1
        assert fb and fb.state is TaskState.failed and fb.exit_code == 0
        assert fb.error == "agent reported error_max_turns"
        sup.store.close()

    run(main())


def test_timeout_kills_grandchildren(tmp_path: Path, fake_path: Path, project: str) -> None:
    pidfile = tmp_path / "gc.pid"

    async def main() -> None:
        sup = make_supervisor(tmp_path, kill_grace_s=0.5)
        await sup.start()
        t = sup.submit(project, f"spawn-grandchild pidfile={pidfile} sleep=30", timeout_s=1.0)
        gc = await asyncio.to_thread(read_pid, pidfile)
        try:
            assert pid_alive(gc)
            t0 = time.monotonic()
            await sup.wait_idle()
            assert time.monotonic() - t0 < 5
            done = sup.store.get(t.id)
            assert done and done.state is TaskState.timeout, done
            assert done.error and "timed out" in done.error
            assert done.signal == 15  # leader honoured SIGTERM
            assert await await_for(lambda: not pid_alive(gc), 3), "grandchild survived the timeout"
        finally:
            kill_quiet(gc)
        sup.store.close()

    run(main())


def test_sigterm_ignored_then_sigkill(tmp_path: Path, fake_path: Path, project: str) -> None:
    pidfile = tmp_path / "self.pid"

    async def main() -> None:
        sup = make_supervisor(tmp_path, kill_grace_s=0.5)
        await sup.start()
        t = sup.submit(project, f"ignore-term pidfile={pidfile} sleep=30", timeout_s=0.5)
        pid = await asyncio.to_thread(read_pid, pidfile)
        try:
            assert sup.running.get(t.id) is not None
            await sup.wait_idle()
            done = sup.store.get(t.id)
            assert done and done.state is TaskState.timeout and done.signal == 9, done
            assert not pid_alive(pid)
        finally:
            kill_quiet(pid)
        sup.store.close()

    run(main())


def test_cancel_running_and_queued(tmp_path: Path, fake_path: Path, project: str) -> None:
    pidfile = tmp_path / "gc.pid"
    ev = Events()

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev, max_parallel=1, kill_grace_s=0.5)
        await sup.start()
        a = sup.submit(project, f"ignore-term spawn-grandchild pidfile={pidfile} sleep=30")
        b = sup.submit(project, "sleep=30")
        gc = await asyncio.to_thread(read_pid, pidfile)
        try:
            assert sup.cancel(b.id) is True  # queued: immediate
            qb = sup.store.get(b.id)
            assert qb and qb.state is TaskState.cancelled and qb.started_at is None
            assert sup.cancel(a.id) is True
            await sup.wait_idle()
            da = sup.store.get(a.id)
            assert da and da.state is TaskState.cancelled and da.error == "cancelled"
            assert await await_for(lambda: not pid_alive(gc), 3)
            assert sup.cancel(a.id) is False  # already finished
            assert sup.cancel("t-nosuchtask") is False
        finally:
            kill_quiet(gc)
        assert ev.types(b.id) == ["task.queued", "task.cancelled"]
        assert ev.types(a.id)[-1] == "task.cancelled"
        sup.store.close()

    run(main())


def test_output_cap(tmp_path: Path, fake_path: Path, project: str) -> None:
    async def main() -> None:
        sup = make_supervisor(tmp_path, profiles={"c": AgentProfile(max_output_mb=1)})
        await sup.start()
        t = sup.submit(project, "big=5", agent="c")
        await sup.wait_idle()
        done = sup.store.get(t.id)
        assert done and done.state is TaskState.completed, done
        assert done.output_truncated
        # the final result line came after the cap and was still parsed
        assert done.cost_usd == pytest.approx(0.0123) and done.result == "Done: big=5"
        size = Path(done.log_path or "").stat().st_size
        assert 1024 * 1024 <= size < 1024 * 1024 + 4096
        assert b"output truncated at 1 MB" in Path(done.log_path or "").read_bytes()[-200:]
        sup.store.close()

    run(main())


def test_env_sanitized(tmp_path: Path, fake_path: Path, project: str,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWG_TEST_SECRET", "hunter2")
    monkeypatch.setenv("AIWG_TEST_PASSED", "visible")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/x")
    sh = AgentProfile(kind="shell")
    passing = AgentProfile(env=["AIWG_TEST_PASSED"])

    async def main() -> None:
        sup = make_supervisor(tmp_path, profiles={"sh": sh, "p": passing})
        await sup.start()
        a = sup.submit(project, "env=AIWG_TEST_SECRET")
        b = sup.submit(project, "env=AIWG_TEST_PASSED", agent="p")
        c = sup.submit(project, 'env | sort; echo "cwd=$PWD"', agent="sh")
        await sup.wait_idle()
        ta, tb, tc = (sup.store.get(x.id) for x in (a, b, c))
        assert ta and ta.result == "AIWG_TEST_SECRET=<unset>"
        assert tb and tb.result == "AIWG_TEST_PASSED=visible"
        assert tc and tc.state is TaskState.completed and tc.result
        env = dict(line.split("=", 1) for line in tc.result.splitlines() if "=" in line)
        assert env["AIWG_TASK_ID"] == c.id
        assert env["cwd"] == project
        assert "NOTIFY_SOCKET" not in env and "AIWG_TEST_SECRET" not in env
        sup.store.close()

    run(main())


def test_unknown_agent_and_bad_command(tmp_path: Path, fake_path: Path, project: str) -> None:
    async def main() -> None:
        bad = AgentProfile(kind="command", command=["/nonexistent/agent", "{prompt}"])
        sup = make_supervisor(tmp_path, profiles={"bad": bad})
        await sup.start()
        with pytest.raises(KeyError):
            sup.submit(project, "x", agent="nope")
        t = sup.submit(project, "x", agent="bad")
        await sup.wait_idle()
        done = sup.store.get(t.id)
        assert done and done.state is TaskState.failed and "cannot start agent" in (done.error or "")
        sup.store.close()

    run(main())


RETRY_PROFILES = {"r1": AgentProfile(retry=1), "r0": AgentProfile(retry=0)}


def test_stop_interrupts_and_next_start_requeues(tmp_path: Path, fake_path: Path, project: str) -> None:
    ev = Events()
    pidfile = tmp_path / "p.pid"

    async def first() -> tuple[str, str]:
        sup = make_supervisor(tmp_path, ev, profiles=RETRY_PROFILES,
                              kill_grace_s=0.5)
        await sup.start()
        a = sup.submit(project, f"sleep=30 pidfile={pidfile}", agent="r1")
        b = sup.submit(project, "sleep=30", agent="r0")
        await asyncio.to_thread(read_pid, pidfile)
        await await_for(lambda: len(sup.running) == 2)
        await sup.stop(grace_s=0.2, stop_agents=True)  # aiwgctl stop --agents
        for x in (a, b):
            t = sup.store.get(x.id)
            assert t and t.state is TaskState.interrupted and t.interruptions == 1, t
        sup.store.close()
        return a.id, b.id

    aid, bid = run(first())

    async def second() -> None:
        # a per-project limit of 0 keeps the re-queued task from running again in this test
        sup = make_supervisor(tmp_path, ev, profiles=RETRY_PROFILES,
                              per_project_limit=lambda p: 0)
        await sup.start()
        ta, tb = sup.store.get(aid), sup.store.get(bid)
        assert ta and ta.state is TaskState.queued and ta.attempts == 1
        assert tb and tb.state is TaskState.failed and tb.error == "interrupted"
        await sup.stop(0)
        sup.store.close()

    run(second())
    assert ev.types(aid) == ["task.queued", "task.started", "task.interrupted", "task.queued"]
    assert ev.types(bid) == ["task.queued", "task.started", "task.interrupted", "task.failed"]


def test_store_failure_at_start_launches_nothing(tmp_path: Path, fake_path: Path, project: str) -> None:
    """'running' is recorded before the launch: if that fails (disk full), nothing runs."""
    ev = Events()
    mark = tmp_path / "mark"

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev)
        sup.store_retry_s = 60
        real = sup.store.mark_started

        def failing(task_id: str, **kw: object) -> None:
            raise StoreError("task store write failed, nothing was changed: database or disk is full")

        sup.store.mark_started = failing  # type: ignore[method-assign]
        await sup.start()
        t = sup.submit(project, f"mark={mark}")
        await sup.wait_idle()
        q = sup.store.get(t.id)
        assert q and q.state is TaskState.queued and q.attempts == 0
        assert ("task.store_error", project) in [(e, p) for e, p, _ in ev.items]
        assert not mark.exists()
        sup.store.mark_started = real  # type: ignore[method-assign]
        await sup.stop(0)
        sup.store.close()

    run(main())


def test_store_failure_after_launch_stops_the_agent(tmp_path: Path, fake_path: Path, project: str) -> None:
    """If the handle cannot be recorded, the launched agent must not live on unseen."""
    ev = Events()
    handles: list[dict] = []

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev, kill_grace_s=0.5)
        sup.store_retry_s = 60

        def failing(task_id: str, handle: dict) -> None:
            handles.append(handle)
            raise StoreError("task store write failed, nothing was changed: database or disk is full")

        sup.store.set_handle = failing  # type: ignore[method-assign]
        await sup.start()
        sup.submit(project, "sleep=30")
        await sup.wait_idle()
        assert handles and not pid_alive(handles[0]["pid"])
        assert ("task.store_error", project) in [(e, p) for e, p, _ in ev.items]
        await sup.stop(0)
        sup.store.close()

    run(main())
