"""``messaging.db``: the Telegram update offset and the inbox of commands received.

The inbox is what makes delivery honest across restarts and reconnects. A command is written (with the
Telegram offset, in the same transaction) before it runs; a second copy of the same platform id is
refused, so a Slack retry, a Discord RESUME replay or a repeated getUpdates batch never runs twice.
At start-up, commands received but never started are run; commands started but never finished (the
service died mid-command) are not re-run blindly: the user is told so.
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
        self.db.execute("DELETE FROM inbox WHERE state IN ('done','refused','failed') AND received < ?",
                        (time.time() - KEEP_DAYS * 86400,))

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

    def pending(self, bridge: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(key, state, record) of commands a previous run received but did not finish, oldest first."""
        rows = self.db.execute("SELECT key, state, record FROM inbox WHERE bridge = ? AND state IN "
                               "('received','started') ORDER BY received", (bridge,)).fetchall()
        return [(k, s, json.loads(r)) for k, s, r in rows]

    def states(self, bridge: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, state FROM inbox WHERE bridge = ?", (bridge,)).fetchall())
