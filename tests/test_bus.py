"""The event bus: wildcards, retries with backoff, dead letters that persist, replay, isolation, history."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest
import uvloop
from service_fixture import ServiceEnv, wait_for

from aiwg_service.events.bus import EventBus, compile_pattern
from aiwg_service.protocol import Event


def run(coro):  # type: ignore[no-untyped-def]
    return uvloop.run(coro)


async def until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("*", ["file.modify", "task.failed", "x"], []),
        ("file.*", ["file.modify", "file.batch"], ["files.x", "task.failed", "file"]),
        ("task.failed", ["task.failed"], ["task.failed2", "task.completed"]),
        ("*.failed", ["task.failed", "x.failed"], ["task.failed.x"]),
        ("webhook.git?ub", ["webhook.github"], ["webhook.gitlab"]),
    ],
)
def test_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    m = compile_pattern(pattern)
    assert all(m(t) for t in matches) and not any(m(t) for t in misses)


def test_delivery_ids_and_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        bus = EventBus(tmp_path / "dl.json", history=5)
        got: list[Event] = []
        bus.subscribe("file.*", got.append, name="files")
        await bus.start()
        evs = [bus.publish("file.modify", "/p", {"path": f"a{i}"}, "watch") for i in range(8)]
        bus.publish("task.queued", "/q", {})
        await until(lambda: len(got) == 8)
        assert [e.data["path"] for e in got] == [f"a{i}" for i in range(8)]
        assert len({e.id for e in evs}) == 8 and [e.id for e in evs] == sorted(e.id for e in evs)
        assert len(bus.history) == 5
        assert [e.type for e in bus.query("task.*")] == ["task.queued"]
        assert [e.data["path"] for e in bus.query("file.*", limit=2)] == ["a6", "a7"]  # newest, oldest first
        assert [e.data["path"] for e in bus.query("file.*", since=evs[4].id)] == ["a5", "a6", "a7"]
        assert bus.query(project="/q")[0].type == "task.queued"
        assert bus.health()["events_by_type"] == {"file.modify": 8, "task.queued": 1}
        await bus.stop()

    run(scenario())


def test_retry_backoff_then_dead_letter_persisted_and_replayed(tmp_path: Path) -> None:
    dl_path = tmp_path / "deadletters.json"
    attempts: list[float] = []

    async def first_life() -> str:
        bus = EventBus(dl_path, retry_delays=(0.1, 0.2, 0.4), jitter=0.1)

        def flaky(ev: Event) -> None:
            attempts.append(time.monotonic())
            raise ValueError("handler broke")

        ok: list[Event] = []
        bus.subscribe("job.*", flaky, name="flaky")
        bus.subscribe("job.*", ok.append, name="healthy")
        await bus.start()
        ev = bus.publish("job.run", None, {"n": 1})
        await until(lambda: ok != [])  # the healthy subscriber is not held up by the failing one
        await until(lambda: len(bus.dlq) == 1, timeout=5)
        dl = bus.dlq[0]
        assert dl.event.id == ev.id and dl.subscriber == "flaky" and dl.attempts == 4
        assert "ValueError: handler broke" in dl.error
        await bus.stop()
        return dl.id

    dl_id = run(first_life())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 3
    for gap, base in zip(gaps, (0.1, 0.2, 0.4), strict=True):  # exponential, within the jitter
        assert base * 0.85 <= gap <= base * 1.1 + 0.1, gaps
    assert journal_letters(dl_path) == [dl_id]

    async def second_life() -> None:
        bus = EventBus(dl_path)
        got: list[Event] = []
        bus.subscribe("job.*", got.append, name="flaky")  # fixed now
        await bus.start()
        assert [d.id for d in bus.dlq] == [dl_id]  # survived the restart
        assert bus.replay("nope") is None
        assert bus.replay(dl_id) is not None
        await until(lambda: len(got) == 1)
        assert got[0].data == {"n": 1} and bus.dlq == []
        await bus.stop()

    run(second_life())
    assert journal_letters(dl_path) == []


def journal_letters(path: Path) -> list[str]:
    """The dead letters' ids in the append-only journal (adds minus drops), read as plain JSON lines."""
    ids: list[str] = []
    for line in path.with_suffix(".jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "add" in rec:
            ids.append(rec["add"]["id"])
        else:
            ids.remove(rec["drop"])
    return ids


def test_slow_subscriber_is_isolated_and_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        bus = EventBus(None)
        release = asyncio.Event()
        fast: list[Event] = []

        async def slow(_ev: Event) -> None:
            await release.wait()

        slow_sub = bus.subscribe("*", slow, name="slow", max_queue=100)
        bus.subscribe("*", fast.append, name="fast")
        await bus.start()
        t0 = time.perf_counter()
        for i in range(1000):
            bus.publish("x.y", None, {"i": i})
        publish_time = time.perf_counter() - t0
        await until(lambda: len(fast) == 1000)
        assert publish_time < 0.5  # the publisher never waited for the slow one
        assert len(slow_sub.queue) <= 100
        assert slow_sub.dropped >= 899 and bus.health()["dropped"] == slow_sub.dropped
        release.set()
        await bus.stop()

    run(scenario())


def test_async_handler_failure_and_unsubscribe(tmp_path: Path) -> None:
    async def scenario() -> None:
        bus = EventBus(tmp_path / "d.json", retry_delays=(0.01,), jitter=0)
        calls = 0

        async def bad(_ev: Event) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("nope")

        sub = bus.subscribe("a", bad, name="bad", retries=1)
        await bus.start()
        bus.publish("a")
        await until(lambda: len(bus.dlq) == 1)
        assert calls == 2
        bus.unsubscribe(sub)
        bus.publish("a")
        await asyncio.sleep(0.05)
        assert calls == 2
        await bus.stop()

    run(scenario())


def test_subscribe_and_list_over_the_real_socket(service: ServiceEnv, tmp_path: Path) -> None:
    baseline = service.call("daemon.status")["subsystems"]["router"]["followers"]
    sub = service.connect()
    reply = sub.request("events.subscribe", {"type": "project.*"})
    assert service.call("daemon.status")["subsystems"]["router"]["followers"] == baseline + 1
    assert reply["result"]["subscribed"] is True
    other = tmp_path / "p2"
    other.mkdir()
    service.call("project.add", {"path": str(other)})
    note = sub.read()
    assert note["method"] == "events.event" and "id" not in note
    assert note["params"]["type"] == "project.added" and note["params"]["project"] == str(other)
    listed = service.call("events.list", {"type": "project.*"})
    assert listed["events"][-1]["id"] == note["params"]["id"]
    c = service.connect()
    bad = c.request("events.replay", {"id": "dl-nope"})
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["param"] == "id"
    assert service.call("events.dlq") == {"dead_letters": []}
    sub.close()
    wait_for(lambda: service.call("daemon.status")["subsystems"]["router"]["followers"] == baseline,
             what="the subscription to go away with its connection")


def test_aiwgctl_events(service: ServiceEnv, tmp_path: Path) -> None:
    other = tmp_path / "p3"
    other.mkdir()
    service.call("project.add", {"path": str(other)})
    # inside a project's directory aiwgctl means that project (as git does): the added one's own events
    out = service.ctl("events", "--type", "project.*", check=True, cwd=other).stdout
    assert "project.added" in out and str(other) in out
    lines = service.ctl("events", "--json", check=True, cwd=other).stdout.splitlines()
    assert any(json.loads(x)["type"] == "project.added" for x in lines)
    assert "no dead letters" in service.ctl("events", "--dead", check=True).stdout
    res = service.ctl("events", "replay", "dl-x")
    assert res.returncode == 1 and "no dead letter" in res.stderr
