"""Run traces and enable/disable overrides in SQLite (stdlib, WAL) at ``state_dir/automation.db``.

Traces are buffered and written in one transaction per flush (the engine flushes every quarter second and before
every read), so a burst of thousands of runs costs a few commits, not thousands. Each rule keeps its last
``keep`` runs; older ones are pruned at flush time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from .. import faults, paths
from ..policy import redact

#: traces are encoded in the flush thread while it holds the GIL: msgspec is several times faster than json, so
#: the event loop waits less for the GIL (that wait showed up in the webhook listener's p99)
_encode = msgspec.json.Encoder(enc_hook=str).encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    project TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    started TEXT NOT NULL,
    outcome TEXT NOT NULL,
    summary TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_rule ON runs (project, rule_id, seq);
CREATE TABLE IF NOT EXISTS overrides (
    project TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (project, rule_id)
);
"""
SUMMARY_KEYS = ("run_id", "rule_id", "project", "started", "finished", "duration_ms", "outcome", "reason",
                "event_type", "event_path", "task_ids")


def summary_of(trace: dict[str, Any]) -> dict[str, Any]:
    return {k: trace.get(k) for k in SUMMARY_KEYS}


class TraceStore:
    def __init__(self, path: Path, keep: int = 100) -> None:
        self.path = path
        self.keep = keep
        self.db: sqlite3.Connection | None = None
        self.pending: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        self.written = 0
        self.lock = threading.Lock()  # the periodic write runs in a worker thread

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.private_file(self.path)  # SQLite gives its -wal/-shm the same mode
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.flush()
            self.db.close()
            self.db = None

    # -- traces ----------------------------------------------------------------------------------------------
    def add(self, trace: dict[str, Any]) -> None:
        key = (trace["project"], trace["rule_id"])
        q = self.pending.get(key)
        if q is None:
            q = self.pending[key] = deque(maxlen=self.keep)  # older ones would be pruned at once anyway
        q.append(trace)

    def take(self) -> dict[tuple[str, str], deque[dict[str, Any]]]:
        """Detach the buffered traces (on the loop thread) so ``write`` can run in a worker thread."""
        pending, self.pending = self.pending, {}
        return pending

    def write(self, pending: dict[tuple[str, str], deque[dict[str, Any]]]) -> int:
        if not pending or self.db is None:
            return 0
        rows = []
        for q in pending.values():
            for t in q:
                detail = _encode(t).decode()
                if redact.find(detail):  # rare: a command printed a token, an event carried a URL with a password
                    t = redact.redact_obj(json.loads(detail))
                    detail = _encode(t).decode()
                rows.append((t["run_id"], t["project"], t["rule_id"], t["started"], t["outcome"],
                             _encode(summary_of(t)).decode(), detail))
        stall = faults.delay("traces.write_delay")
        if stall:  # a test's slow disk (see ``faults``)
            faults.stalling("traces.write", stall)
        with self.lock:
            db = self.db
            if db is None:
                raise RuntimeError(f"{self.path} was closed before {len(rows)} trace(s) were written")
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR REPLACE INTO runs (run_id, project, rule_id, started, outcome, summary, "
                               "detail) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                for project, rule_id in pending:
                    db.execute("DELETE FROM runs WHERE project = ? AND rule_id = ? AND seq < (SELECT seq FROM runs "
                               "WHERE project = ? AND rule_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                               (project, rule_id, project, rule_id, self.keep - 1))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.written += len(rows)
        return len(rows)

    def flush(self) -> int:
        return self.write(self.take())

    def runs(self, project: str, rule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first."""
        self.flush()
        assert self.db is not None
        with self.lock:
            rows = self.db.execute("SELECT summary FROM runs WHERE project = ? AND rule_id = ? ORDER BY seq DESC "
                                   "LIMIT ?", (project, rule_id, limit)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def run(self, project: str, rule_id: str, run_id: str) -> dict[str, Any] | None:
        self.flush()
        assert self.db is not None
        with self.lock:
            row = self.db.execute("SELECT detail FROM runs WHERE project = ? AND rule_id = ? AND run_id = ?",
                                  (project, rule_id, run_id)).fetchone()
        return json.loads(row[0]) if row else None

    def by_run_id(self, run_id: str) -> dict[str, Any] | None:
        """One run in full by its id alone (``trace.get``)."""
        self.flush()
        assert self.db is not None
        with self.lock:
            row = self.db.execute("SELECT detail FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def by_event(self, event_id: str = "", *, task_id: str = "", delivery_id: str = "") -> list[dict[str, Any]]:
        """Runs a given event triggered, runs triggered by events about a task, or by a webhook delivery
        (``trace.get``)."""
        self.flush()
        assert self.db is not None
        path, value = (("$.event.id", event_id) if event_id else ("$.event.data.id", task_id) if task_id
                       else ("$.event.data.delivery_id", delivery_id))
        with self.lock:
            rows = self.db.execute("SELECT detail FROM runs WHERE json_extract(detail, ?) = ? ORDER BY seq",
                                   (path, value)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count(self, project: str, rule_id: str) -> int:
        self.flush()
        assert self.db is not None
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM runs WHERE project = ? AND rule_id = ?",
                                   (project, rule_id)).fetchone()[0]

    def last(self, project: str, rule_id: str) -> dict[str, Any] | None:
        got = self.runs(project, rule_id, 1)
        return got[0] if got else None

    # -- overrides -------------------------------------------------------------------------------------------
    def overrides(self) -> dict[tuple[str, str], bool]:
        assert self.db is not None
        return {(p, r): bool(e) for p, r, e in self.db.execute("SELECT project, rule_id, enabled FROM overrides")}

    def clear_override(self, project: str, rule_id: str) -> None:
        assert self.db is not None
        with self.lock:
            self.db.execute("DELETE FROM overrides WHERE project = ? AND rule_id = ?", (project, rule_id))

    def set_override(self, project: str, rule_id: str, enabled: bool, when: str) -> None:
        assert self.db is not None
        with self.lock:
            self.db.execute("INSERT INTO overrides (project, rule_id, enabled, updated) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (project, rule_id) DO UPDATE SET enabled = excluded.enabled, "
                            "updated = excluded.updated", (project, rule_id, int(enabled), when))
