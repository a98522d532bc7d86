"""Delivery de-duplication: each hook's delivery ids are remembered in SQLite for 24 hours.

One statement per delivery decides "new or seen" atomically (an upsert that only refreshes a row older than the
window), so two copies racing in are still one. WAL with synchronous NORMAL: a crash of the service loses
nothing; only a power cut can forget the last few ids, and then a sender's redelivery runs once more.
Old rows are pruned at most once an hour, on a delivery, so an idle listener never wakes up for it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

WINDOW_S = 24 * 3600.0
PRUNE_EVERY_S = 3600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    hook TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (hook, delivery_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received);
"""


class DeliveryLog:
    def __init__(self, path: Path, window_s: float = WINDOW_S) -> None:
        self.path = path
        self.window_s = window_s
        self.db: sqlite3.Connection | None = None
        self._pruned = 0.0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def first_time(self, hook: str, delivery_id: str, now: float | None = None) -> bool:
        """Record the delivery; True if it was not seen in the window (so it should be published)."""
        assert self.db is not None
        now = time.time() if now is None else now
        cur = self.db.execute(
            "INSERT INTO deliveries (hook, delivery_id, received) VALUES (?, ?, ?) ON CONFLICT (hook, delivery_id) "
            "DO UPDATE SET received = excluded.received WHERE deliveries.received < ?",
            (hook, delivery_id, now, now - self.window_s))
        if now - self._pruned > PRUNE_EVERY_S:
            self._pruned = now
            self.db.execute("DELETE FROM deliveries WHERE received < ?", (now - self.window_s,))
        return cur.rowcount == 1
