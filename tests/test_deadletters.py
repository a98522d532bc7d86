"""The dead-letter queue is an append-only journal: a thousand dead letters write about a thousand lines,
not a thousand copies of the whole queue; it survives a restart, a torn last line and the old file format."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from aiwg_service.events.bus import DLQ_MAX, DeadLetter, EventBus
from aiwg_service.protocol import Event


def wchar() -> int:
    """Bytes this process has passed to write() so far (threads included)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_a_thousand_dead_letters_append_not_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "deadletters.json"
    n = 1000

    async def main() -> float:
        bus = EventBus(path, retry_delays=(0.01,), jitter=0)
        await bus.start()
        ev = bus.publish("job.run", None, {"blob": "x" * 500})
        before = wchar()
        worst = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            bus.dead_letter(ev, "sub", f"error {i}", 1)
            worst = max(worst, time.perf_counter() - t0)
        await bus.stop()  # waits for the journal's writer
        written = wchar() - before
        line = len(path.with_suffix(".jsonl").read_bytes()) / n
        # rewritten per letter this would be ~n*n/2 lines (about 400 MB); appended, about n lines
        assert written < 4 * n * line, (written, line)
        return worst

    worst = asyncio.run(main())
    print(f"longest dead_letter() call on the loop: {worst * 1000:.2f} ms")  # figure for the report; bench/loop.py
    again = EventBus(path)
    again._load_dlq()
    assert len(again.dlq) == min(n, DLQ_MAX) and again.dlq[-1].error == f"error {n - 1}"


def test_the_journal_survives_a_torn_line_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "deadletters.json"
    ev = Event("ev-1", "job.run", "2026-01-01T00:00:00Z", None, "test", {})
    # the old format: one JSON array, moved into the journal on load
    path.write_bytes(json.dumps([{"id": "dl-old", "event": {"id": "ev-1", "type": "job.run",
                                                            "time": "2026-01-01T00:00:00Z", "project": None,
                                                            "source": "test", "data": {}},
                                  "subscriber": "s", "error": "e", "attempts": 1,
                                  "time": "2026-01-01T00:00:00Z"}]).encode())
    bus = EventBus(path)
    bus._load_dlq()
    assert [d.id for d in bus.dlq] == ["dl-old"] and not path.exists()
    journal = path.with_suffix(".jsonl")
    with journal.open("ab") as f:
        f.write(b'{"add": {"id": "dl-torn", "ev')  # a crash mid-append
    again = EventBus(path)
    again._load_dlq()
    assert [d.id for d in again.dlq] == ["dl-old"]
    assert journal.stat().st_mode & 0o777 == 0o600
    assert isinstance(again.dlq[0], DeadLetter) and again.dlq[0].event.type == ev.type
