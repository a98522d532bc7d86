"""Durable task store: one SQLite file, one transaction per state transition.

Durability: WAL with ``synchronous=NORMAL`` plus a group commit.  WAL + NORMAL already survives a
kill -9 of the service (the WAL is in the page cache) but can lose the last commits on power loss or
a kernel crash.  What must survive those too waits for :meth:`Store.durable`: one ``fsync`` of the WAL,
in a thread (off the event loop), for every commit made up to then, shared by everyone who waits
meanwhile.  ``task.submit`` answers only after it (a task whose submit was answered is on disk), and a
run's own files (its exit record) are dropped only after its outcome is.  (It was ``synchronous=FULL``:
~3 fsyncs per task on the loop, stalling every other client.)

All other calls are synchronous and run on the caller's (event-loop) thread: they are indexed point
reads/writes, well under a millisecond without the fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .. import paths
from .agents import kill_orphan_group
from .model import (
    FINISHED_STATES,
    Emit,
    Task,
    TaskSource,
    TaskState,
    format_time,
    new_task_id,
    utc_now,
)

__all__ = ["MIGRATIONS", "Store", "StoreError"]

log = logging.getLogger(__name__)

_FIELDS: tuple[str, ...] = Task.__struct_fields__
_COLS = ", ".join(_FIELDS)

#: Ordered schema migrations; MIGRATIONS[i] takes ``user_version`` i to i+1.  Append only.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        project TEXT NOT NULL,
        prompt TEXT NOT NULL,
        agent TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        interruptions INTEGER NOT NULL DEFAULT 0,
        pid INTEGER,
        pid_start TEXT,
        exit_code INTEGER,
        signal INTEGER,
        session_id TEXT,
        cost_usd REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cache_creation_tokens INTEGER,
        cache_read_tokens INTEGER,
        num_turns INTEGER,
        result TEXT,
        log_path TEXT,
        output_truncated INTEGER NOT NULL DEFAULT 0,
        timeout_s REAL,
        error TEXT
    );
    -- newest-first listing with keyset pagination on id, per filter
    CREATE INDEX tasks_state_id ON tasks(state, id);
    CREATE INDEX tasks_project_id ON tasks(project, id);
    CREATE INDEX tasks_project_state_id ON tasks(project, state, id);
    CREATE INDEX tasks_source_id ON tasks(source, id);
    -- the scheduler's pick: highest priority, then oldest
    CREATE INDEX tasks_queue ON tasks(priority DESC, id) WHERE state = 'queued';
    -- retention
    CREATE INDEX tasks_finished_at ON tasks(finished_at) WHERE finished_at IS NOT NULL;
    """,
    "ALTER TABLE tasks ADD COLUMN subagent TEXT;",
    """
    ALTER TABLE tasks ADD COLUMN executor TEXT;
    ALTER TABLE tasks ADD COLUMN handle TEXT;
    ALTER TABLE tasks ADD COLUMN origin TEXT;
    ALTER TABLE tasks ADD COLUMN stop_reason TEXT;
    ALTER TABLE tasks ADD COLUMN adopted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN detached_at TEXT;
    ALTER TABLE tasks ADD COLUMN cost_status TEXT;
    ALTER TABLE tasks ADD COLUMN max_budget_usd REAL;
    ALTER TABLE tasks ADD COLUMN held_reason TEXT;
    CREATE INDEX tasks_held ON tasks(priority DESC, id) WHERE state = 'held';
    -- budgets: spend per period
    CREATE INDEX tasks_started_at ON tasks(started_at) WHERE started_at IS NOT NULL;
    """,
]

#: Columns stored as JSON text.
_JSON_FIELDS = frozenset({"handle", "origin"})
_json_enc = msgspec.json.Encoder()


class StoreError(RuntimeError):
    """A store write failed (e.g. disk full); the database is unchanged by it."""


class _Expr(str):
    """An SQL expression to use verbatim in an UPDATE's SET (e.g. ``attempts + 1``)."""


class Store:
    """Tasks in ``<state_dir>/tasks.db``; every transition commits, then emits its event."""

    def __init__(self, state_dir: str | os.PathLike[str], emit: Emit | None = None, *,
                 filename: str = "tasks.db") -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.dir / filename
        self._emit_cb = emit
        #: Group commit: commits made, commits known on disk, who waits for which, the fsync under way.
        self._commits = 0
        self._synced = 0
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wal_fd: int | None = None
        try:
            paths.private_file(self.path)
        except OSError as e:
            raise StoreError(f"cannot open task store {self.path}: {e.strerror}") from e
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # fsyncs come from durable(), grouped
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"cannot open task store {self.path}: {e}") from e

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        self._db.close()  # the last connection's close checkpoints and syncs
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
            self._wal_fd = None

    # -- group commit ------------------------------------------------------------------

    async def durable(self) -> None:
        """Until every commit made so far is on disk (see the module's docstring).  Raises StoreError."""
        target = self._commits
        if self._synced >= target:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._sync_waiters.append((target, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="aiwg-store-fsync")
        await fut

    async def _flush(self) -> None:
        while self._sync_waiters:
            await asyncio.sleep(0)  # the rest of this loop turn's commits join this fsync
            upto = self._commits
            try:
                await asyncio.to_thread(self._fsync_wal)
            except OSError as e:
                err = StoreError(f"task store: cannot sync {self.path}-wal: {e.strerror or e}")
                waiters, self._sync_waiters = self._sync_waiters, []
                for _t, f in waiters:
                    if not f.done():
                        f.set_exception(err)
                return
            self._synced = max(self._synced, upto)
            keep = []
            for target, f in self._sync_waiters:
                if target <= upto:
                    if not f.done():
                        f.set_result(None)
                else:
                    keep.append((target, f))
            self._sync_waiters = keep

    def _fsync_wal(self) -> None:
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # no commit in WAL mode yet: nothing to sync
                return
        os.fsync(self._wal_fd)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        cur = self.schema_version
        if cur > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema v{cur}, newer than this aiwg-service "
                             f"(v{len(MIGRATIONS)})")
        for version in range(cur, len(MIGRATIONS)):
            with self._tx():
                for stmt in _split_sql(MIGRATIONS[version]):
                    self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {version + 1}")
            log.info("task store %s migrated to v%d", self.path, version + 1)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; any sqlite error rolls back and becomes a StoreError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"task store: {e}") from e
        try:
            yield self._db
            self._db.execute("COMMIT")
            self._commits += 1
        except BaseException as e:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"task store write failed, nothing was changed: {e}") from e
            raise

    def _emit(self, event: str, task: Task) -> None:
        if self._emit_cb is None:
            return
        try:
            self._emit_cb(event, task.project, task.to_dict())
        except Exception:  # an observer must never break the state machine
            log.exception("event handler failed for %s %s", event, task.id)

    @staticmethod
    def _row(row: Sequence[Any]) -> Task:
        d = dict(zip(_FIELDS, row, strict=True))
        d["state"] = TaskState(d["state"])
        d["source"] = TaskSource(d["source"])
        d["output_truncated"] = bool(d["output_truncated"])
        h = d["handle"]
        d["handle"] = msgspec.json.decode(h) if h else None
        o = d["origin"]
        d["origin"] = msgspec.json.decode(o) if o else {}
        return Task(**d)

    def _transition(self, task_id: str, from_states: Iterable[TaskState], event: str | None,
                    sets: dict[str, Any]) -> Task | None:
        """UPDATE one row if it is in one of ``from_states``; commit; emit.  None if not applicable."""
        froms = [s.value for s in from_states]
        assigns, params = [], []
        for k, v in sets.items():
            if k not in _FIELDS:
                raise ValueError(f"unknown task field {k!r}")
            if isinstance(v, _Expr):
                assigns.append(f"{k} = {v}")
            else:
                assigns.append(f"{k} = ?")
                params.append(_sql_value(k, v))
        sql = (f"UPDATE tasks SET {', '.join(assigns)} WHERE id = ? AND state IN "
               f"({', '.join('?' * len(froms))}) RETURNING {_COLS}")
        with self._tx() as db:
            row = db.execute(sql, (*params, task_id, *froms)).fetchone()
        if row is None:
            return None
        task = self._row(row)
        if event:
            self._emit(event, task)
        return task

    # -- creation and reads ---------------------------------------------------------

    def submit(self, project: str, prompt: str, *, agent: str = "claude", priority: int = 0,
               source: TaskSource | str = TaskSource.cli, timeout_s: float | None = None,
               subagent: str | None = None, origin: dict[str, Any] | None = None,
               max_budget_usd: float | None = None, executor: str | None = None) -> Task:
        """Insert a queued task (one transaction) and emit ``task.queued``.  ``executor``: where the
        task asked to run (else its profile decides when it starts)."""
        task = Task(id=new_task_id(), project=str(project), prompt=prompt, agent=agent,
                    priority=int(priority), source=TaskSource(source), created_at=utc_now(),
                    timeout_s=timeout_s, subagent=subagent, origin=dict(origin or {}),
                    max_budget_usd=max_budget_usd, executor=executor)
        return self.insert(task)

    def begin_external(self, project: str, prompt: str, *, agent: str, source: TaskSource | str,
                       origin: dict[str, Any] | None = None) -> Task:
        """Record work the supervisor does not run (an interactive session in tmux) as a ``running`` task;
        its owner ends it with :meth:`mark_finished`.  :meth:`running` (recovery, re-adoption) leaves it out."""
        now = utc_now()
        task = Task(id=new_task_id(), project=str(project), prompt=prompt, agent=agent, source=TaskSource(source),
                    state=TaskState.running, created_at=now, started_at=now, attempts=1)
        if origin is not None:
            task.origin = origin
        vals = [_sql_value(f, getattr(task, f)) for f in _FIELDS]
        with self._tx() as db:
            db.execute(f"INSERT INTO tasks ({_COLS}) VALUES ({', '.join('?' * len(_FIELDS))})", vals)
        self._emit("task.started", task)
        return task

    def insert(self, task: Task) -> Task:
        vals = [_sql_value(f, getattr(task, f)) for f in _FIELDS]
        with self._tx() as db:
            db.execute(f"INSERT INTO tasks ({_COLS}) VALUES ({', '.join('?' * len(_FIELDS))})", vals)
        self._emit(f"task.{task.state.value}", task)
        return task

    def get(self, task_id: str) -> Task | None:
        row = self._db.execute(f"SELECT {_COLS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else self._row(row)

    def list(self, *, state: TaskState | str | None = None, project: str | None = None,
             source: TaskSource | str | None = None, limit: int = 50, cursor: str | None = None,
             offset: int = 0) -> tuple[list[Task], str | None]:
        """Newest first.  Returns (page, next_cursor); pass next_cursor back for the next page
        (keyset on id: stable under inserts and O(page) at any depth).  ``offset`` is for UIs only."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(TaskState(state).value)
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if source is not None:
            where.append("source = ?")
            params.append(TaskSource(source).value)
        if cursor is not None:
            where.append("id < ?")
            params.append(cursor)
        limit = max(1, min(int(limit), 1000))
        sql = f"SELECT {_COLS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        rows = self._db.execute(sql, (*params, limit, max(0, int(offset)))).fetchall()
        tasks = [self._row(r) for r in rows]
        nxt = tasks[-1].id if len(tasks) == limit else None
        return tasks, nxt

    def count(self, state: TaskState | str, project: str | None = None) -> int:
        """Tasks in ``state`` (an index range count: cheap enough for every status line), of one project."""
        if project is None:
            return int(self._db.execute("SELECT count(*) FROM tasks WHERE state = ?",
                                        (TaskState(state).value,)).fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM tasks WHERE state = ? AND project = ?",
                                    (TaskState(state).value, project)).fetchone()[0])

    def queued_groups(self) -> list[tuple[str, str, str | None, int]]:
        """(agent, project, requested executor, count) of the queued tasks: where they will run is the
        executor's or their profile's, which the caller resolves."""
        rows = self._db.execute("SELECT agent, project, executor, count(*) FROM tasks WHERE state = 'queued' "
                                "GROUP BY agent, project, executor").fetchall()
        return [(str(a), str(p), e, int(n)) for a, p, e, n in rows]

    def running(self) -> list[Task]:
        """Running or interrupted tasks the supervisor owns (interactive sessions, source ``session``, live in
        tmux: their owner settles them, so recovery and re-adoption never see them)."""
        rows = self._db.execute(f"SELECT {_COLS} FROM tasks WHERE state IN (?, ?) AND source != ? ORDER BY id",
                                (TaskState.running.value, TaskState.interrupted.value,
                                 TaskSource.session.value)).fetchall()
        return [self._row(r) for r in rows]

    def next_queued(self, exclude_projects: Iterable[str] = (),
                    exclude_ids: Iterable[str] = ()) -> Task | None:
        """Highest priority, then oldest, among queued tasks not in an excluded project."""
        xp, xi = list(exclude_projects), list(exclude_ids)
        # Force the partial queue index: the planner otherwise picks (state, id) and sorts
        # every queued row for each pick.
        sql = f"SELECT {_COLS} FROM tasks INDEXED BY tasks_queue WHERE state = 'queued'"
        if xp:
            sql += f" AND project NOT IN ({', '.join('?' * len(xp))})"
        if xi:
            sql += f" AND id NOT IN ({', '.join('?' * len(xi))})"
        sql += " ORDER BY priority DESC, id LIMIT 1"
        row = self._db.execute(sql, (*xp, *xi)).fetchone()
        return None if row is None else self._row(row)

    def stats(self, project: str | None = None) -> dict[str, Any]:
        """Counts per state, mean/p95 run time (s) of finished runs, total cost (USD)."""
        where, params = ("WHERE project = ?", (project,)) if project is not None else ("", ())
        out: dict[str, Any] = {"total": 0, **{s.value: 0 for s in TaskState}}
        for st, n in self._db.execute(f"SELECT state, count(*) FROM tasks {where} GROUP BY state", params):
            out[st] = n
            out["total"] += n
        fin = "started_at IS NOT NULL AND finished_at IS NOT NULL"
        dur = "(julianday(finished_at) - julianday(started_at)) * 86400.0"
        cond = f"{where} AND {fin}" if where else f"WHERE {fin}"
        n, mean = self._db.execute(f"SELECT count(*), avg({dur}) FROM tasks {cond}", params).fetchone()
        p95 = None
        if n:
            k = min(n - 1, int(0.95 * n))
            p95 = self._db.execute(f"SELECT {dur} AS d FROM tasks {cond} ORDER BY d LIMIT 1 OFFSET ?",
                                   (*params, k)).fetchone()[0]
        cost = self._db.execute(f"SELECT total(cost_usd) FROM tasks {where}", params).fetchone()[0]
        out["finished_runs"] = n
        out["mean_run_s"] = None if mean is None else round(mean, 3)
        out["p95_run_s"] = None if p95 is None else round(p95, 3)
        out["cost_usd"] = round(cost or 0.0, 6)
        return out

    # -- transitions ------------------------------------------------------------

    def mark_started(self, task_id: str, *, pid: int | None = None, pid_start: str | None = None,
                     log_path: str | None, executor: str | None = None) -> Task | None:
        """queued -> running (attempts + 1); emits ``task.started``.

        With an ``executor`` this is recorded *before* the run is launched (its handle follows with
        :meth:`set_handle`): a crash in between leaves a ``running`` row whose attempt recovery
        can find or rule out, never a run the store does not know about."""
        return self._transition(task_id, [TaskState.queued], "task.started", {
            "state": TaskState.running, "started_at": utc_now(), "finished_at": None,
            "attempts": _Expr("attempts + 1"), "pid": pid, "pid_start": pid_start, "log_path": log_path,
            "exit_code": None, "signal": None, "error": None, "executor": executor, "handle": None,
            "stop_reason": None, "held_reason": None, "detached_at": None,
        })

    def set_handle(self, task_id: str, handle: dict[str, Any]) -> Task | None:
        """The executor's handle of the running attempt (no event: nothing changed for clients)."""
        pid = handle.get("pid") if isinstance(handle.get("pid"), int) else None
        return self._transition(task_id, [TaskState.running], None, {"handle": handle, "pid": pid})

    def set_stop_reason(self, task_id: str, reason: str) -> Task | None:
        """Persist why we are about to stop a running task (before signalling it)."""
        return self._transition(task_id, [TaskState.running], None, {"stop_reason": reason})

    def mark_adopted(self, adopted: Iterable[tuple[str, dict[str, Any]]]) -> list[Task]:
        """A restarted service took these running tasks back (one transaction for all; event
        ``task.adopted`` each)."""
        out: list[Task] = []
        with self._tx() as db:
            for tid, handle in adopted:
                pid = handle.get("pid") if isinstance(handle.get("pid"), int) else None
                row = db.execute(f"UPDATE tasks SET adopted = adopted + 1, handle = ?, pid = ? WHERE id = ? "
                                 f"AND state = 'running' RETURNING {_COLS}",
                                 (_sql_value("handle", handle), pid, tid)).fetchone()
                if row is not None:
                    out.append(self._row(row))
        for t in out:
            self._emit("task.adopted", t)
        return out

    def note_detached(self, task_ids: Iterable[str]) -> None:
        """A graceful stop left these running (one transaction)."""
        now = utc_now()
        with self._tx() as db:
            db.executemany("UPDATE tasks SET detached_at = ? WHERE id = ? AND state = 'running'",
                           [(now, t) for t in task_ids])

    def requeue_unstarted(self, task_id: str) -> Task | None:
        """running -> queued for an attempt recovery proved never started and never will (its
        number stays used: the next launch is a new attempt with its own claim)."""
        return self._transition(task_id, [TaskState.running], "task.queued", {
            "state": TaskState.queued, "started_at": None, "handle": None, "pid": None, "pid_start": None})

    def hold(self, task_id: str, reason: str) -> Task | None:
        """queued -> held (a budget is spent); emits ``task.held``."""
        return self._transition(task_id, [TaskState.queued], "task.held",
                                {"state": TaskState.held, "held_reason": reason[:500]})

    def set_queued_reason(self, task_id: str, reason: str | None) -> Task | None:
        """Why a queued task is not starting (its executor is down or full), shown as ``held_reason``
        while it stays ``queued``; emits ``task.waiting`` when a reason is set."""
        return self._transition(task_id, [TaskState.queued], "task.waiting" if reason else None,
                                {"held_reason": reason[:500] if reason else None})

    def release(self, task_id: str) -> Task | None:
        """held -> queued; emits ``task.queued``."""
        return self._transition(task_id, [TaskState.held], "task.queued",
                                {"state": TaskState.queued, "held_reason": None})

    def costs_since(self, since: str) -> list[tuple[str, str | None, float, str]]:
        """``(project, rule, cost_usd, finished_at)`` of tasks finished since ``since`` with a cost
        (the budgets' ledger loads a month with it)."""
        return self._db.execute(
            "SELECT project, coalesce(json_extract(origin, '$.rule'), json_extract(origin, '$.rule_id')), "
            "cost_usd, finished_at FROM tasks "
            "INDEXED BY tasks_finished_at WHERE finished_at IS NOT NULL AND finished_at >= ? "
            "AND cost_usd IS NOT NULL", (since,)).fetchall()

    def finished_since(self, since: str) -> list[tuple[str, str, float | None, float | None, str]]:
        """``(project, state, run seconds, cost_usd, finished_at)`` of tasks finished since ``since``
        (the dashboard's cost chart and the /metrics histograms)."""
        return self._db.execute(
            "SELECT project, state, (julianday(finished_at) - julianday(started_at)) * 86400.0, cost_usd, "
            "finished_at FROM tasks INDEXED BY tasks_finished_at WHERE finished_at IS NOT NULL "
            "AND finished_at >= ?", (since,)).fetchall()

    #: Origin keys ``by_origin`` may look up.
    ORIGIN_KEYS = frozenset({"event_id", "rule", "rule_id", "run_id", "approval", "approval_id", "conversation",
                             "turn", "cron_job", "webhook_delivery", "webhook_delivery_id"})

    def by_origin(self, key: str, value: str, limit: int = 200) -> list[Task]:
        """Tasks whose ``origin[key] == value`` (``trace.get``), oldest first."""
        if key not in self.ORIGIN_KEYS:
            raise ValueError(f"not an origin key: {key!r}")
        rows = self._db.execute(f"SELECT {_COLS} FROM tasks WHERE origin IS NOT NULL AND "
                                f"json_extract(origin, ?) = ? ORDER BY id LIMIT ?",
                                (f"$.{key}", value, limit)).fetchall()
        return [self._row(r) for r in rows]

    def held(self) -> list[Task]:
        rows = self._db.execute(f"SELECT {_COLS} FROM tasks INDEXED BY tasks_held WHERE state = 'held' "
                                "ORDER BY priority DESC, id").fetchall()
        return [self._row(r) for r in rows]

    def mark_finished(self, task_id: str, state: TaskState, **fields: Any) -> Task | None:
        """running -> completed|failed|timeout|cancelled with the run's outcome fields."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state} is not a final state")
        sets = {"state": state, "finished_at": utc_now(), **fields}
        return self._transition(task_id, [TaskState.running], f"task.{state.value}", sets)

    def fail_queued(self, task_id: str, error: str) -> Task | None:
        """queued -> failed, for a task that could not even be started (bad profile, exec error)."""
        return self._transition(task_id, [TaskState.queued], "task.failed",
                                {"state": TaskState.failed, "finished_at": utc_now(), "error": error[:500]})

    def cancel_queued(self, task_id: str) -> Task | None:
        """queued|held -> cancelled; None if it is neither (any more)."""
        sets = {"state": TaskState.cancelled, "finished_at": utc_now(), "error": "cancelled"}
        return self._transition(task_id, [TaskState.queued, TaskState.held], "task.cancelled", sets)

    def mark_interrupted(self, task_id: str, **fields: Any) -> Task | None:
        """running -> interrupted (the run was cut short by a service stop/crash); emits
        ``task.interrupted``.  :meth:`resolve_interrupted` then re-queues or fails it."""
        sets = {"state": TaskState.interrupted, "interruptions": _Expr("interruptions + 1"), **fields}
        return self._transition(task_id, [TaskState.running], "task.interrupted", sets)

    def resolve_interrupted(self, task_id: str, retry: int) -> Task | None:
        """interrupted -> queued if attempts <= retry (emits ``task.queued``), else failed."""
        t = self.get(task_id)
        if t is None or t.state is not TaskState.interrupted:
            return None
        if t.attempts <= retry:
            return self._transition(task_id, [TaskState.interrupted], "task.queued", {
                "state": TaskState.queued, "pid": None, "pid_start": None})
        return self._transition(task_id, [TaskState.interrupted], "task.failed", {
            "state": TaskState.failed, "finished_at": t.finished_at or utc_now(), "error": "interrupted"})

    def recover(self, retry_for: Callable[[str], int],
                kill_orphan: Callable[[int, str | None], bool] = kill_orphan_group, *,
                retry_for_task: Callable[[Task], int] | None = None,
                tasks: Iterable[Task] | None = None) -> list[Task]:
        """Start-up: settle tasks a previous life left ``running`` or ``interrupted`` (all of them,
        or just ``tasks``: runs no executor can re-adopt).

        For each: kill its orphaned process group if it is provably ours
        (``kill_orphan(pid, pid_start)`` compares /proc start time and boot id),
        record ``interrupted`` (event), then re-queue it if ``attempts <= retry``
        (``retry_for(agent)``, or ``retry_for_task(task)`` when given, for profiles that
        depend on the project; an unknown agent counts as 0) or fail it with
        error "interrupted".  Returns the settled tasks.
        """
        out = []
        for t in (self.running() if tasks is None else tasks):
            if t.state is TaskState.running:
                if t.pid:
                    try:
                        kill_orphan(t.pid, t.pid_start)
                    except OSError as e:
                        log.warning("could not kill orphan group %s of %s: %s", t.pid, t.id, e)
                self.mark_interrupted(t.id, finished_at=utc_now(), error="service restarted while running")
            try:
                retry = retry_for_task(t) if retry_for_task is not None else retry_for(t.agent)
            except Exception:
                retry = 0
            done = self.resolve_interrupted(t.id, retry)
            if done is not None:
                out.append(done)
        return out

    def prune(self, retention_days: float = 30, *, now: float | None = None, batch: int = 1000) -> int:
        """Delete finished tasks older than ``retention_days`` and then their log files."""
        removed = 0
        while True:
            n = len(self.prune_slice(retention_days, now=now, batch=batch))
            removed += n
            if n < batch:
                return removed

    def prune_slice(self, retention_days: float = 30, *, now: float | None = None, batch: int = 200,
                    unlink: bool = True) -> list[str]:
        """One transaction of ``prune`` (at most ``batch`` tasks); returns their log files (removed unless
        ``unlink`` is False: the service removes them in a thread). The service runs these with the loop
        free between them, so a large prune never stalls it."""
        cutoff = format_time((time.time() if now is None else now) - retention_days * 86400)
        finals = [s.value for s in FINISHED_STATES]
        with self._tx() as db:
            rows = db.execute(
                f"SELECT id, log_path FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ? "
                f"AND state IN ({', '.join('?' * len(finals))}) LIMIT ?",
                (cutoff, *finals, batch)).fetchall()
            if rows:
                db.executemany("DELETE FROM tasks WHERE id = ?", [(r[0],) for r in rows])
        logs = [lp for _id, lp in rows if lp]
        if unlink:
            remove_files(logs)
        return [*logs, *([""] * (len(rows) - len(logs)))]  # one entry per task pruned

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def remove_files(paths: list[str]) -> None:
    for lp in paths:
        if lp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lp)


def _sql_value(field: str, v: Any) -> Any:
    if isinstance(v, TaskState | TaskSource):
        return v.value
    if field in _JSON_FIELDS:
        return None if v is None or (field == "origin" and not v) else _json_enc.encode(v).decode()
    return v


def _split_sql(script: str) -> list[str]:
    """Statements of a migration (none of ours contain ';' inside literals)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
