"""Delivery de-duplication: each hook's delivery ids are remembered in SQLite for 24 hours.

The check is on the event loop and atomic there: an id is new when it is neither among the ids waiting to be
written nor in the table (a primary-key read, no write). New ids are written in one transaction per
``flush_interval`` in a worker thread, so a burst of deliveries costs a few commits instead of one each. The
price: a crash (not a clean stop, which flushes) forgets the ids of the last ``flush_interval`` (50 ms), and a
redelivery of exactly those would be published again. WAL with synchronous NORMAL; rows older than the window
are pruned at most once an hour, in the same write, so an idle listener never wakes up for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .. import faults

log = logging.getLogger("aiwg.webhooks")

WINDOW_S = 24 * 3600.0
PRUNE_EVERY_S = 3600.0
FLUSH_INTERVAL = 0.05

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
    def __init__(self, path: Path, window_s: float = WINDOW_S, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.window_s = window_s
        self.flush_interval = flush_interval
        self.db: sqlite3.Connection | None = None  # the writer, used by the flush thread
        self.reader: sqlite3.Connection | None = None  # the loop's: WAL lets it read while the writer commits
        self.pending: dict[tuple[str, str], float] = {}
        self._writing: dict[tuple[str, str], float] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self._pruned = 0.0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self.db = db
        self.reader = sqlite3.connect(self.path, isolation_level=None)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self.write(self.take())
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def first_time(self, hook: str, delivery_id: str, now: float | None = None) -> bool:
        """Record the delivery; True if it was not seen in the window (so it should be published)."""
        assert self.reader is not None
        now = time.time() if now is None else now
        key = (hook, delivery_id)
        if key in self.pending or key in self._writing:  # not committed yet: the reader cannot see these
            return False
        row = self.reader.execute("SELECT received FROM deliveries WHERE hook = ? AND delivery_id = ?", key).fetchone()
        if row is not None and row[0] >= now - self.window_s:
            return False
        self.pending[key] = now
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon(), name="webhooks:dedup")
        return True

    def take(self) -> dict[tuple[str, str], float]:
        batch, self.pending = self.pending, {}
        return batch

    async def _flush_soon(self) -> None:
        """One batch per ``flush_interval``; the task stays ``_flusher`` until its threaded write is done
        (looping while ids came in meanwhile), so ``close`` waits for it before closing the database."""
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                batch = self._writing = self.take()
                try:
                    await asyncio.to_thread(self.write, batch)
                except Exception:
                    log.exception("webhooks: cannot record delivery ids in %s", self.path)
                finally:
                    self._writing = {}
                if not self.pending:
                    return
        finally:
            self._flusher = None

    def write(self, batch: dict[tuple[str, str], float]) -> None:
        if not batch or self.db is None:
            return
        now = max(batch.values())
        stall = faults.delay("dedup.write_delay")
        if stall:  # a test's slow disk (see ``faults``)
            faults.stalling("dedup.write", stall)
        with self._lock:
            db = self.db
            if db is None:
                raise RuntimeError(f"{self.path} was closed before {len(batch)} delivery id(s) were written")
            db.execute("BEGIN")
            try:
                db.executemany("INSERT OR REPLACE INTO deliveries (hook, delivery_id, received) VALUES (?, ?, ?)",
                               [(h, d, t) for (h, d), t in batch.items()])
                if now - self._pruned > PRUNE_EVERY_S:
                    self._pruned = now
                    db.execute("DELETE FROM deliveries WHERE received < ?", (now - self.window_s,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
