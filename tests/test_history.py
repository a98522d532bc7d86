"""The bus's history by sequence number: bounds by count and bytes, pins for prompt followers, the seq file."""

from __future__ import annotations

from pathlib import Path

from aiwg_service.events.bus import EventBus
from aiwg_service.events.history import FRAME_HEAD, FRAME_TAIL, PIN_FACTOR, History, Kept, SeqFile


def kept(seq: int, size: int = 100) -> Kept:
    raw = b'{"id":"ev-%d","pad":"%s"}' % (seq, b"x" * size)
    return Kept(seq, f"ev-{seq}", "t", "x.y", None, FRAME_HEAD + raw + FRAME_TAIL)


def test_bounded_by_count_and_bytes_and_addressed_by_seq() -> None:
    h = History(max_events=10, max_bytes=10**9)
    for s in range(1, 26):
        h.append(kept(s))
        h.trim()
    assert 8 <= len(h) <= 10 and h.first_seq == 26 - len(h) and h.last_seq == 25 and h.evicted == 25 - len(h)
    assert [k.seq for k in h.after(20)] == [21, 22, 23, 24, 25]
    assert [k.seq for k in h.after(3)] == list(range(h.first_seq, 26))  # from before the history: what is left
    assert list(h.after(25)) == []
    h2 = History(max_events=10**6, max_bytes=5_000)
    for s in range(1, 2001):
        h2.append(kept(s, 1000))
        h2.trim()
    assert h2.bytes <= 5_000 and len(h2) == h2.bytes // len(kept(1, 1000).frame)
    assert [k.seq for k in h2][-1] == 2000 and bytes(h2.after(1999).__next__().raw).startswith(b'{"id":"ev-2000"')


def test_a_prompt_follower_pins_what_it_has_not_read_within_a_bound() -> None:
    h = History(max_events=1000, max_bytes=10_000)
    frame = len(kept(1, 1000).frame)
    for s in range(1, 101):
        h.append(kept(s, 1000))
        h.trim(pinned=0)  # a follower that has read nothing yet
    # held past the byte bound, up to PIN_FACTOR times it
    assert 10_000 < h.bytes <= 10_000 * PIN_FACTOR and h.first_seq > 1
    assert h.bytes + frame > 10_000 * PIN_FACTOR
    h.trim(pinned=None)  # the follower went (or became slow): back within the bound
    assert h.bytes <= 10_000


def test_seq_file_keeps_numbers_rising(tmp_path: Path) -> None:
    path = tmp_path / "events.seq"
    f = SeqFile(path)
    assert f.load() == 0
    f.reserve(1)
    assert int(path.read_text()) == 1 + SeqFile.BLOCK  # a crash now restarts above every number given out
    f.close(42)
    assert SeqFile(path).load() == 42
    path.write_text("garbage")
    assert SeqFile(path).load() > 10**15  # unreadable: numbering goes on from the clock, never backwards


def test_bus_numbers_events_and_keeps_them_once(tmp_path: Path) -> None:
    import asyncio

    async def scenario() -> None:
        bus = EventBus(None, history=100, seq_path=tmp_path / "events.seq")
        await bus.start()
        evs = [bus.publish("file.modify", "/p", {"path": f"a{i}"}) for i in range(5)]
        assert [e.seq for e in evs] == [1, 2, 3, 4, 5]
        assert [e.seq for e in bus.query(since=2)] == [3, 4, 5]
        assert [e.data["path"] for e in bus.history] == [f"a{i}" for i in range(5)]
        await bus.stop()
        again = EventBus(None, seq_path=tmp_path / "events.seq")
        await again.start()
        assert again.publish("x.y").seq == 6
        await again.stop()

    asyncio.run(scenario())
