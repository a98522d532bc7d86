"""Store: schema, transitions, listing, stats, prune, disk-full behaviour, list latency."""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

import pytest

from aiwg_service.tasks.model import Task, TaskSource, TaskState, format_time, new_task_id
from aiwg_service.tasks.store import MIGRATIONS, Store, StoreError
from tests.tasks_support import Events


def test_migrations_from_empty_and_idempotent_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert s.schema_version == len(MIGRATIONS)
    t = s.submit("/p", "hello")
    s.close()
    s = Store(tmp_path)  # re-open: no migration runs twice, data kept
    assert s.schema_version == len(MIGRATIONS)
    assert s.get(t.id) == t
    mode = s._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = s._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 1)  # 1 = NORMAL: the fsyncs come grouped from Store.durable()
    s.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "tasks.db")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path)


def test_transitions_and_events(tmp_path: Path) -> None:
    ev = Events()
    s = Store(tmp_path, ev)
    t = s.submit("/p", "x", priority=3, source="cron", timeout_s=5)
    assert t.state is TaskState.queued and t.source is TaskSource.cron
    r = s.mark_started(t.id, pid=123, pid_start="b:1", log_path="/l")
    assert r and r.state is TaskState.running and r.attempts == 1 and r.pid == 123
    assert s.mark_started(t.id, pid=1, pid_start=None, log_path=None) is None  # not queued any more
    assert s.cancel_queued(t.id) is None
    f = s.mark_finished(t.id, TaskState.completed, exit_code=0, cost_usd=0.5)
    assert f and f.state is TaskState.completed and f.finished_at
    assert s.mark_finished(t.id, TaskState.failed) is None  # final states are final
    assert ev.types() == ["task.queued", "task.started", "task.completed"]
    assert ev.items[-1][1] == "/p" and ev.items[-1][2]["cost_usd"] == 0.5
    assert ev.items[-1][2]["state"] == "completed"
    with pytest.raises(ValueError):
        s.mark_finished(t.id, TaskState.running)
    s.close()


def test_next_queued_priority_fifo_and_exclusions(tmp_path: Path) -> None:
    s = Store(tmp_path)
    a = s.submit("/a", "1", priority=0)
    b = s.submit("/b", "2", priority=5)
    c = s.submit("/a", "3", priority=5)
    d = s.submit("/c", "4", priority=0)
    assert s.next_queued() == b
    assert s.next_queued(exclude_ids=[b.id]) == c
    assert s.next_queued(exclude_projects=["/b"]) == c
    assert s.next_queued(exclude_projects=["/b", "/a"]) == d
    assert s.next_queued(exclude_projects=["/b", "/a", "/c"]) is None
    assert s.next_queued(exclude_ids=[b.id, c.id]) == a
    s.close()


def _bulk(s: Store, tasks: list[Task]) -> None:
    for t in tasks:
        s.insert(t)


def test_list_pagination_and_filters(tmp_path: Path) -> None:
    s = Store(tmp_path)
    made = []
    for i in range(250):
        t = s.submit(f"/p{i % 3}", f"task {i}", source=("cli", "cron", "webhook")[(i % 3 == 0 and 1) or 0])
        if i % 5 == 0:
            s.mark_started(t.id, pid=1, pid_start=None, log_path=None)
        made.append(t.id)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = s.list(limit=20, cursor=cursor)
        seen += [t.id for t in page]
        pages += 1
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True)  # newest first, nothing lost or repeated
    assert pages == 13
    running, _ = s.list(state="running", limit=1000)
    assert {t.id for t in running} == {made[i] for i in range(0, 250, 5)}
    p1, _ = s.list(project="/p1", limit=1000)
    assert len(p1) == len(range(1, 250, 3)) and all(t.project == "/p1" for t in p1)
    both, _ = s.list(project="/p0", state="running", limit=1000)
    assert {t.id for t in both} == {made[i] for i in range(0, 250, 15)}
    cron, _ = s.list(source="cron", limit=1000)
    assert all(t.source is TaskSource.cron for t in cron) and len(cron) == len(range(0, 250, 3))
    off, _ = s.list(limit=5, offset=5)
    assert [t.id for t in off] == seen[5:10]
    s.close()


def _finished(project: str, start: float, run_s: float, cost: float, state: TaskState) -> Task:
    return Task(id=new_task_id(), project=project, prompt="p", state=state, created_at=format_time(start),
                started_at=format_time(start), finished_at=format_time(start + run_s), cost_usd=cost,
                attempts=1)


def test_stats(tmp_path: Path) -> None:
    s = Store(tmp_path)
    now = time.time() - 1000
    _bulk(s, [_finished("/a", now, float(i + 1), 0.01, TaskState.completed) for i in range(20)])
    _bulk(s, [_finished("/b", now, 100.0, 1.0, TaskState.failed)])
    s.submit("/a", "q")
    st = s.stats("/a")
    assert st["total"] == 21 and st["completed"] == 20 and st["queued"] == 1 and st["failed"] == 0
    assert st["mean_run_s"] == pytest.approx(10.5, abs=0.01)
    assert st["p95_run_s"] == pytest.approx(20.0, abs=0.01)
    assert st["cost_usd"] == pytest.approx(0.2)
    al = s.stats()
    assert al["total"] == 22 and al["failed"] == 1 and al["cost_usd"] == pytest.approx(1.2)
    for k in ("running", "timeout", "cancelled"):
        assert al[k] == 0
    empty = Store(tmp_path / "e").stats()
    assert empty["total"] == 0 and empty["mean_run_s"] is None and empty["p95_run_s"] is None
    s.close()


def test_prune(tmp_path: Path) -> None:
    s = Store(tmp_path)
    old = time.time() - 40 * 86400
    logs = tmp_path / "logs"
    logs.mkdir()
    olds = []
    for i in range(5):
        t = _finished("/p", old, 1, 0, TaskState.completed if i else TaskState.cancelled)
        lp = logs / f"{t.id}.log"
        lp.write_text("x")
        t.log_path = str(lp)
        s.insert(t)
        olds.append(t)
    recent = _finished("/p", time.time() - 86400, 1, 0, TaskState.failed)
    s.insert(recent)
    queued_old = Task(id=new_task_id(), project="/p", prompt="q", created_at=format_time(old))
    s.insert(queued_old)
    assert s.prune(30, batch=2) == 5
    assert all(not Path(t.log_path or "").exists() for t in olds)
    left, _ = s.list(limit=100)
    assert {t.id for t in left} == {recent.id, queued_old.id}
    assert s.prune(30) == 0
    s.close()


def test_disk_full_leaves_db_consistent(tmp_path: Path) -> None:
    """SQLITE_FULL (simulated with max_page_count) fails the call cleanly, never half a task."""
    s = Store(tmp_path)
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count = {pages + 3}")
    ok, err = [], None
    for i in range(10_000):
        try:
            ok.append(s.submit("/p", "y" * 2000 + str(i)).id)
        except StoreError as e:
            err = e
            break
    assert err is not None and "full" in str(err)
    # the transition that failed left nothing behind; earlier ones are intact; the store still works
    ids = [r[0] for r in s._db.execute("SELECT id FROM tasks ORDER BY id")]
    assert ids == ok
    assert s.integrity_check() == "ok"
    assert s.mark_started(ok[0], pid=1, pid_start=None, log_path=None) is not None
    s.close()
    s = Store(tmp_path)
    assert [t.id for t in s.list(limit=1000)[0]][::-1] == ok
    assert s.integrity_check() == "ok"
    s.close()


def test_list_fast_at_100k(tmp_path: Path) -> None:
    s = Store(tmp_path)
    t0 = time.time() - 86400
    rows = []
    states = ["completed"] * 8 + ["failed", "queued"]
    for i in range(100_000):
        ts = format_time(t0 + i * 0.5)
        rows.append((new_task_id(), f"/p{i % 20}", "prompt", "claude", 0, states[i % 10],
                     ("cli", "cron", "rule")[i % 3], ts, ts, ts))
    with s._tx() as db:
        db.executemany("INSERT INTO tasks (id, project, prompt, agent, priority, state, source, created_at,"
                       " started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    lat: dict[str, list[float]] = {}
    for name, kw in {"all": {}, "state": {"state": "failed"}, "project": {"project": "/p7"},
                     "proj+state": {"project": "/p9", "state": "queued"},
                     "source": {"source": "rule"}}.items():
        for _ in range(30):
            a = time.perf_counter()
            page, cur = s.list(limit=20, **kw)  # type: ignore[arg-type]
            s.list(limit=20, cursor=cur, **kw)  # type: ignore[arg-type]
            lat.setdefault(name, []).append((time.perf_counter() - a) / 2)
            assert len(page) == 20
    for name, xs in lat.items():
        assert statistics.median(xs) < 0.010, (name, statistics.median(xs))
    a = time.perf_counter()
    s.stats()
    assert time.perf_counter() - a < 1.0
    s.close()


def test_next_queued_uses_the_queue_index(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.submit("/p", "x")
    captured: list[str] = []
    s._db.set_trace_callback(captured.append)
    s.next_queued(["/q"], ["t-x"])
    s._db.set_trace_callback(None)
    plan = s._db.execute("EXPLAIN QUERY PLAN " + captured[-1]).fetchall()
    assert any("tasks_queue" in row[-1] for row in plan) and not any("TEMP B-TREE" in row[-1] for row in plan)
    s.close()
