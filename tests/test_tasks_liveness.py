"""A task is ``running`` only while something proves it (issue #24): following its output may fail,
its end is still seen, once; an end seen after a restart keeps the runner's own time; a final cost
over the task's own budget is a finished run, not a stopped one."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiwg_service.tasks.model import AgentProfile, TaskState, parse_time
from tests.tasks_support import Events, await_for, make_fakebin, make_supervisor, run


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


def test_inotify_enospc_while_following_a_run_still_completes_once(tmp_path: Path) -> None:
    """The user's watch limit full (0 in a user namespace of our own, restored after): output is read
    on a timer while inotify fails, the run completes once, and inotify is used again once it works."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed"
    child = Path(__file__).with_name("follow_limit_child.py")
    res = subprocess.run([unshare, "-U", "-r", sys.executable, str(child), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().endswith("ok")


def test_run_finished_during_downtime_keeps_its_own_finished_at(tmp_path: Path, fake_path: Path,
                                                               project: str) -> None:
    ev = Events()

    async def first() -> tuple[str, Path]:
        sup = make_supervisor(tmp_path, ev)
        await sup.start()
        t = sup.submit(project, "sleep=0.5 quick")
        await await_for(lambda: sup.store.get(t.id).handle is not None, 20)
        run_base = Path(sup.store.get(t.id).handle["run"])
        await sup.stop(0)  # leaves it running, detached
        sup.store.close()
        return t.id, run_base

    tid, base = run(first())
    exit_file = base.with_name(base.name + ".exit")
    end = time.monotonic() + 30
    while not exit_file.exists():
        assert time.monotonic() < end, "the run never recorded its end"
        time.sleep(0.02)
    ran_until = json.loads(exit_file.read_text())["finished_at"]
    while time.time() < parse_time(ran_until) + 1.2:  # the service comes back well after the run ended
        time.sleep(0.05)

    async def second() -> None:
        sup = make_supervisor(tmp_path, ev)
        await sup.start()
        await asyncio.wait_for(sup.wait_idle(), 30)
        done = sup.store.get(tid)
        assert done is not None and done.state is TaskState.completed, done
        assert done.finished_at == ran_until
        await sup.stop(0)
        sup.store.close()

    run(second())


def test_final_cost_over_its_own_budget_is_finished_not_stopped(tmp_path: Path, fake_path: Path,
                                                                project: str) -> None:
    """The fake reports $0.0123 in its result line; no prices, so nothing is known before it."""
    ev = Events()

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev, profiles={"c": AgentProfile(max_budget_usd=0.01)})
        await sup.start()
        t = sup.submit(project, "hello", agent="c")
        await asyncio.wait_for(sup.wait_idle(), 30)
        done = sup.store.get(t.id)
        assert done is not None and done.state is TaskState.completed, done
        assert done.cost_usd == pytest.approx(0.0123) and done.error is None and done.signal is None
        await sup.stop(0)
        sup.store.close()

    run(main())


def test_concurrent_starts_reserve_before_they_spend(tmp_path: Path, fake_path: Path, project: str) -> None:
    """Ten $0.10 tasks submitted at once under a $0.50 project day: each start reserves its budget, so at
    most one reservation past the limit is ever spent ($0.60), not ten tasks' worth."""
    from aiwg_service.budgets.ledger import Ledger
    from aiwg_service.budgets.schema import BudgetSection

    ev = Events()
    section = BudgetSection(project_daily_usd=0.5, tz="UTC")

    async def main() -> None:
        sup = make_supervisor(tmp_path, ev, max_parallel=10)
        ledger = Ledger(sup.store.costs_since, lambda: (section, {}), ev)
        ledger.reload()
        sup.admit, sup.on_cost = ledger.admit, ledger.on_cost
        await sup.start()
        ids = [sup.submit(project, f"sleep=0.5 cost=0.1 n={i}", max_budget_usd=0.1).id for i in range(10)]
        await asyncio.wait_for(sup.wait_idle(), 60)
        tasks = [sup.store.get(i) for i in ids]
        done = [t for t in tasks if t is not None and t.state is TaskState.completed]
        held = [t for t in tasks if t is not None and t.state is TaskState.held]
        assert len(done) + len(held) == 10
        spent = sum(t.cost_usd or 0 for t in done)
        assert 0.5 <= spent <= 0.6 + 1e-9, spent
        assert held and all("project.daily budget" in (t.held_reason or "") for t in held)
        assert not ledger.reserved and not ledger.live  # every reservation settled
        await sup.stop(0)
        sup.store.close()

    run(main())
