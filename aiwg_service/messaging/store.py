"""``messaging.db``: the Telegram update offset, the inbox of commands received, and each bridge's outbox.

The inbox is what makes delivery honest across restarts and reconnects. A command is written (with the
Telegram offset, in the same transaction) before it runs; a second copy of the same platform id is
refused, so a Slack retry, a Discord RESUME replay or a repeated getUpdates batch never runs twice.
At start-up, commands received but never started are run; commands started but never finished (the
service died mid-command) are not re-run blindly: the user is told so.

The outbox holds every message a bridge owes (alerts, approval requests, answers) from before the first
attempt until the platform acknowledged it: a bridge whose server is away keeps them, in order, across
restarts of the service too. It is bounded per bridge: beyond the bound the oldest go, and are counted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (bridge TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    bridge TEXT NOT NULL, key TEXT NOT NULL, received REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'received',  -- received | started | done | refused | failed
    record TEXT NOT NULL,
    PRIMARY KEY (bridge, key)
);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, bridge TEXT NOT NULL, target TEXT, message TEXT NOT NULL,
    queued REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    event TEXT  -- the event it announces (JSON), for the dead-letter queue if the platform refuses it for good
);
CREATE INDEX IF NOT EXISTS outbox_bridge ON outbox (bridge, id);
CREATE TABLE IF NOT EXISTS outbox_dropped (bridge TEXT PRIMARY KEY, count INTEGER NOT NULL);
-- approval prompts sent, so a decision from anywhere (another chat, the CLI) updates them all
CREATE TABLE IF NOT EXISTS prompts (
    bridge TEXT NOT NULL, approval_id TEXT NOT NULL, ref TEXT NOT NULL, message TEXT NOT NULL, sent REAL NOT NULL,
    PRIMARY KEY (bridge, approval_id, ref)
);
"""
KEEP_DAYS = 7


class MessagingStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "messaging.db"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(inbox)")}
        if "task_id" not in cols:  # the turn an /ask queued: its answer is owed across a restart
            self.db.execute("ALTER TABLE inbox ADD COLUMN task_id TEXT")
        self.db.execute("DELETE FROM inbox WHERE state IN ('done','refused','failed') AND received < ?",
                        (time.time() - KEEP_DAYS * 86400,))
        self.db.execute("DELETE FROM prompts WHERE sent < ?", (time.time() - 30 * 86400,))

    def close(self) -> None:
        self.db.close()

    def offset(self, bridge: str) -> int | None:
        row = self.db.execute("SELECT value FROM offsets WHERE bridge = ?", (bridge,)).fetchone()
        return int(row[0]) if row else None

    def receive(self, bridge: str, key: str, record: dict[str, Any], offset: int | None = None) -> bool:
        """Record a command (and the new offset) in one transaction; False if this key was seen before."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute("INSERT OR IGNORE INTO inbox (bridge, key, received, record) VALUES (?,?,?,?)",
                                  (bridge, key, time.time(), json.dumps(record)))
            if offset is not None:
                self.db.execute("INSERT INTO offsets (bridge, value) VALUES (?, ?) "
                                "ON CONFLICT(bridge) DO UPDATE SET value = excluded.value", (bridge, offset))
        return cur.rowcount == 1

    def set_offset(self, bridge: str, offset: int) -> None:
        with self.db:
            self.db.execute("INSERT INTO offsets (bridge, value) VALUES (?, ?) "
                            "ON CONFLICT(bridge) DO UPDATE SET value = excluded.value", (bridge, offset))

    def mark(self, bridge: str, key: str, state: str) -> None:
        with self.db:
            self.db.execute("UPDATE inbox SET state = ? WHERE bridge = ? AND key = ?", (state, bridge, key))

    def set_task(self, bridge: str, key: str, task_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE inbox SET task_id = ? WHERE bridge = ? AND key = ?", (task_id, bridge, key))

    def pending(self, bridge: str) -> list[tuple[str, str, dict[str, Any], str | None]]:
        """(key, state, record, task id) of commands a previous run received but did not finish, oldest first."""
        rows = self.db.execute("SELECT key, state, record, task_id FROM inbox WHERE bridge = ? AND state IN "
                               "('received','started') ORDER BY received", (bridge,)).fetchall()
        return [(k, s, json.loads(r), t) for k, s, r, t in rows]

    def states(self, bridge: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, state FROM inbox WHERE bridge = ?", (bridge,)).fetchall())

    # -- the outbox ------------------------------------------------------------------------------------
    def put(self, bridge: str, target: str | None, message: dict[str, Any], event: str | None,
            bound: int) -> tuple[int, int]:
        """Queue a message behind the bridge's others; (its id, how many old ones the bound dropped)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute("INSERT INTO outbox (bridge, target, message, queued, event) VALUES (?,?,?,?,?)",
                                  (bridge, target, json.dumps(message), time.time(), event))
            oid = int(cur.lastrowid or 0)
            (depth,) = self.db.execute("SELECT COUNT(*) FROM outbox WHERE bridge = ?", (bridge,)).fetchone()
            dropped = max(0, int(depth) - bound)
            if dropped:
                self.db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE bridge = ? "
                                "ORDER BY id LIMIT ?)", (bridge, dropped))
                self.db.execute("INSERT INTO outbox_dropped (bridge, count) VALUES (?, ?) ON CONFLICT(bridge) "
                                "DO UPDATE SET count = count + excluded.count", (bridge, dropped))
        return oid, dropped

    def head(self, bridge: str) -> tuple[int, str | None, dict[str, Any], int, str | None] | None:
        """The oldest message the bridge owes: (id, target, message, attempts, event JSON)."""
        row = self.db.execute("SELECT id, target, message, attempts, event FROM outbox WHERE bridge = ? "
                              "ORDER BY id LIMIT 1", (bridge,)).fetchone()
        return None if row is None else (int(row[0]), row[1], json.loads(row[2]), int(row[3]), row[4])

    def sent(self, oid: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM outbox WHERE id = ?", (oid,))

    def attempt_failed(self, oid: int, error: str) -> None:
        with self.db:
            self.db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                            (error[:500], oid))

    def outbox_state(self, bridge: str) -> dict[str, Any]:
        depth, oldest = self.db.execute("SELECT COUNT(*), MIN(queued) FROM outbox WHERE bridge = ?",
                                        (bridge,)).fetchone()
        row = self.db.execute("SELECT count FROM outbox_dropped WHERE bridge = ?", (bridge,)).fetchone()
        return {"queued": int(depth), "oldest_age_s": round(time.time() - oldest, 1) if oldest else None,
                "dropped": int(row[0]) if row else 0}

    # -- approval prompts ------------------------------------------------------------------------------
    def prompt_sent(self, bridge: str, approval_id: str, ref: str, message: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO prompts (bridge, approval_id, ref, message, sent) "
                            "VALUES (?,?,?,?,?)", (bridge, approval_id, ref, json.dumps(message), time.time()))

    def prompts(self, approval_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(bridge, ref, message) of every prompt sent for an approval."""
        rows = self.db.execute("SELECT bridge, ref, message FROM prompts WHERE approval_id = ?",
                               (approval_id,)).fetchall()
        return [(b, r, json.loads(m)) for b, r, m in rows]

    def prompt_closed(self, bridge: str, approval_id: str, ref: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM prompts WHERE bridge = ? AND approval_id = ? AND ref = ?",
                            (bridge, approval_id, ref))
