"""The bus's retained history, addressed by sequence number, bounded by count and by bytes.

Each event is kept once, as the notification frame every follower is sent, so a large batch costs its
bytes once however many subscribers read it, and a follower costs a cursor (a sequence number), not a
queue. Sequence numbers in the history are consecutive, so finding the events after ``seq`` is an index.
The sequence itself survives restarts through ``SeqFile`` (journald's cursor is the model).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("aiwg.bus")

#: Defaults of ``daemon.event_history`` and ``daemon.event_history_bytes``.
MAX_EVENTS = 10_000
MAX_BYTES = 8 * 1024 * 1024
#: Past its bounds, the history still keeps what a prompt follower has not read yet, up to this many times
#: the byte bound: so a flush of any size reaches a follower that reads, and memory stays bounded.
PIN_FACTOR = 4
#: The notification every ``events.subscribe`` follower is sent; the event's JSON sits between these.
FRAME_HEAD = b'{"jsonrpc":"2.0","method":"events.event","params":'
FRAME_TAIL = b"}\n"


class Kept(NamedTuple):
    """One retained event: what followers filter on, and its frame (the event's JSON is ``raw``)."""

    seq: int
    id: str
    time: str
    type: str
    project: str | None
    frame: bytes

    @property
    def raw(self) -> memoryview:
        return memoryview(self.frame)[len(FRAME_HEAD):-len(FRAME_TAIL)]


class History:
    """The newest events, at most ``max_events`` and ``max_bytes`` of frames (beyond that only while a
    prompt follower still needs them, see ``PIN_FACTOR``)."""

    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: list[Kept] = []
        self._head = 0  # items before this index are evicted (compacted now and then)
        self.bytes = 0
        self.last_seq = 0  # the newest sequence number given out (kept or evicted)
        self.evicted = 0

    def start_at(self, seq: int) -> None:
        """The next event appended has sequence number ``seq + 1`` (the history must be empty)."""
        assert len(self) == 0
        self.last_seq = seq

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __iter__(self) -> Iterator[Kept]:
        items = self._items
        for i in range(self._head, len(items)):
            yield items[i]

    def __reversed__(self) -> Iterator[Kept]:
        items = self._items
        for i in range(len(items) - 1, self._head - 1, -1):
            yield items[i]

    @property
    def first_seq(self) -> int:
        """The oldest retained sequence number; ``last_seq + 1`` when nothing is retained."""
        return self._items[self._head].seq if len(self) else self.last_seq + 1

    def append(self, kept: Kept) -> None:
        self.last_seq = kept.seq
        self._items.append(kept)
        self.bytes += len(kept.frame)

    def after(self, seq: int) -> Iterator[Kept]:
        """The retained events with a sequence number above ``seq``, oldest first (live: appended ones too)."""
        start = self._head + max(0, seq + 1 - self.first_seq)
        items = self._items
        i = start
        while i < len(items):
            if i < self._head:  # evicted under us (a follower that yields and comes back)
                i = self._head
                continue
            yield items[i]
            i += 1

    @property
    def over(self) -> bool:
        return len(self) > self.max_events or self.bytes > self.max_bytes

    def trim(self, pinned: int | None = None) -> None:
        """Evict the oldest events past the bounds (down to 7/8 of them, so that this runs once per many
        publishes), but not those above ``pinned`` (the lowest cursor of a prompt follower) while the
        history stays under ``PIN_FACTOR`` times its bounds."""
        items = self._items
        head = self._head
        n = len(items) - head
        size = self.bytes
        max_events, max_bytes = self.max_events, self.max_bytes
        if n <= max_events and size <= max_bytes:
            return
        low_events, low_bytes = max_events - max_events // 8, max_bytes - max_bytes // 8
        hard_events, hard_bytes = max_events * PIN_FACTOR, max_bytes * PIN_FACTOR
        while n and (n > low_events or size > low_bytes):
            oldest = items[head]
            if pinned is not None and oldest.seq > pinned and size <= hard_bytes and n <= hard_events:
                break
            size -= len(oldest.frame)
            items[head] = None  # type: ignore[call-overload]  # freed now; compacted below
            head += 1
            n -= 1
        self.evicted += head - self._head
        self._head, self.bytes = head, size
        if head > 1024 and head * 2 > len(items):
            del items[:head]
            self._head = 0


class SeqFile:
    """The bus's high-water mark on disk, so sequence numbers keep rising across restarts.

    Cheap: the file is written once per ``BLOCK`` numbers (a reservation) and once at a clean stop (the exact
    last number). After a crash the next run starts above the reservation, so the numbers never repeat; the
    unused ones in between are reported to followers as lost (an over-count, never an under-count)."""

    BLOCK = 100_000

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.reserved = 0

    def load(self) -> int:
        """The last number of the previous run (or its reservation, after a crash); 0 for a new state dir."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            return max(0, int(self.path.read_text().split()[0]))
        except (OSError, ValueError, IndexError) as exc:
            log.error("event sequence file %s unreadable (%s); numbering continues from the clock", self.path, exc)
            import time

            return time.time_ns() // 1000  # microseconds since 1970: above any number a run could have reached

    def reserve(self, upto: int) -> None:
        """Make sure the file says at least ``upto``, a block ahead (called when a number passes the mark)."""
        if upto <= self.reserved:
            return
        self.reserved = upto + self.BLOCK
        self._write(self.reserved)

    def close(self, last: int) -> None:
        self.reserved = last
        self._write(last)

    def _write(self, value: int) -> None:
        if self.path is None:
            return
        # replaced atomically but not fsynced: it must survive the process, not a power cut (after one,
        # numbers may repeat; fsync here made every start wait on the disk)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(f"{value}\n".encode())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot record the event sequence in %s: %s", self.path, exc)

