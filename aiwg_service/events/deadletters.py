"""The dead-letter queue on disk: an append-only JSON-lines journal, written by one worker thread.

Each dead letter appends one line (``{"add": letter}``), each replay one (``{"drop": id}``); nothing is
rewritten per letter, and the loop only queues the line. When the journal holds more than twice what the
queue keeps, the worker rewrites it whole (atomically) from a snapshot: amortized, one rewrite per
thousand letters. A torn last line (a crash mid-append) is skipped on load. The old whole-file
``deadletters.json`` is read once and moved into the journal.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from ..atomic import write_atomic

log = logging.getLogger("aiwg.bus")


class DeadLetterJournal:
    """Persistence for the bus's dead letters; ``T`` is the bus's ``DeadLetter`` Struct."""

    def __init__(self, path: Path, letter_type: Any, keep: int) -> None:
        self.path = path.with_suffix(".jsonl")
        self.legacy = path if path.suffix == ".json" else None
        self.type = letter_type
        self.keep = keep
        self.records = 0
        self.failures = 0
        self._io: ThreadPoolExecutor | None = None
        self._decode_line = msgspec.json.Decoder(dict[str, Any])

    def load(self) -> list[Any]:
        """The letters in the journal (and the legacy file), oldest first; at start-up, before serving."""
        letters: dict[str, Any] = {}
        if self.legacy is not None and self.legacy.exists():
            try:
                for dl in msgspec.json.decode(self.legacy.read_bytes(), type=list[self.type]):
                    letters[dl.id] = dl
            except (OSError, msgspec.DecodeError, json.JSONDecodeError) as exc:
                log.error("dead-letter file %s unreadable (%s); its letters are dropped", self.legacy, exc)
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            log.error("dead-letter journal %s unreadable (%s); starting with an empty queue", self.path, exc)
            lines = []
        for n, line in enumerate(lines, 1):
            try:
                rec = self._decode_line.decode(line)
                if "add" in rec:
                    dl = msgspec.convert(rec["add"], self.type)
                    letters[dl.id] = dl
                elif "drop" in rec:
                    letters.pop(str(rec["drop"]), None)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("dead-letter journal %s line %d skipped: %s", self.path, n, exc)
        out = list(letters.values())[-self.keep:]
        self.records = len(lines)
        if (self.legacy is not None and self.legacy.exists()) or len(lines) > len(out):
            try:  # compact once, now (start-up, before serving)
                self._rewrite(msgspec.json.encode([{"add": dl} for dl in out]), len(out))
                if self.legacy is not None:
                    self.legacy.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot compact the dead-letter journal %s: %s", self.path, exc)
        return out

    def _worker(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiwg-dlq")
        return self._io

    def append(self, letter: Any, current: list[Any]) -> None:
        """Record ``letter`` (``current``: the queue after it was added, for a compaction's snapshot)."""
        self._queue(msgspec.json.encode({"add": letter}) + b"\n", current)

    def drop(self, letter_id: str, current: list[Any]) -> None:
        self._queue(msgspec.json.encode({"drop": letter_id}) + b"\n", current)

    def _queue(self, line: bytes, current: list[Any]) -> None:
        self.records += 1
        if self.records > 2 * self.keep:
            # encoded here, on the loop, so the snapshot is the queue as it is now (a few ms per thousand)
            snapshot = b"\n".join(msgspec.json.encode({"add": dl}) for dl in current)
            self.records = len(current)
            self._worker().submit(self._guard, self._rewrite, snapshot + b"\n" if current else b"", len(current))
        else:
            self._worker().submit(self._guard, self._append, line)

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as exc:
            self.failures += 1
            log.error("cannot persist the dead-letter queue to %s: %s", self.path, exc)

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, data: bytes, count: int) -> None:
        if data.startswith(b"["):  # from load(): a JSON array of records, one line each
            data = b"".join(msgspec.json.encode(r) + b"\n" for r in msgspec.json.decode(data))
        write_atomic(self.path, data)
        log.debug("dead-letter journal %s compacted to %d letter(s)", self.path, count)

    def close(self) -> None:
        """Wait for the queued writes (called from a worker thread or at stop)."""
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
