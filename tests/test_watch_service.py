"""Watcher defects that need the real service process: SIGSTOP around operations (defect 4), and names
that are not UTF-8 through the bus, history, the DLQ, followers and ``aiwgctl events`` (defect 6)."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvloop
from service_fixture import ServiceEnv, wait_for
from watch_truth import problems, reports, tree_files

from aiwg_service.events.bus import EventBus

WATCH = {"watch": {"debounce_ms": 200, "paths": [{"path": "src/", "events": ["create", "modify", "delete"]}]},
         "schedule": {"jobs": []}}


def file_events(svc: ServiceEnv) -> list[dict[str, Any]]:
    return svc.call("events.list", {"type": "file.*", "limit": 1000})["events"]


def as_triples(events: list[dict[str, Any]]) -> list[tuple[str, str, dict]]:
    return [(e["type"], e["project"], e["data"]) for e in events]


def test_queued_events_never_name_a_path_that_did_not_exist(svc_env: ServiceEnv) -> None:
    """Defect 4: with the service stopped, `mkdir N; mv X/a X/b; mv X N/X`. The queued events are older
    than what the scan of N sees; N/X/a never existed and must not be reported."""
    svc_env.write_project_config(WATCH)
    src = svc_env.project / "src"
    (src / "X").mkdir(parents=True)
    (src / "X" / "a").write_text("a")
    svc_env.start()
    before = tree_files(svc_env.project)
    assert before == {"src/X/a"}
    assert svc_env.proc is not None
    os.kill(svc_env.proc.pid, signal.SIGSTOP)
    try:
        (src / "N").mkdir()
        os.rename(src / "X" / "a", src / "X" / "b")
        os.rename(src / "X", src / "N" / "X")
    finally:
        os.kill(svc_env.proc.pid, signal.SIGCONT)
    after = tree_files(svc_env.project)
    wait_for(lambda: any(p == "src/N/X/b" for p, _ in reports(as_triples(file_events(svc_env)))),
             what="src/N/X/b reported")
    time.sleep(0.5)  # anything else would have been flushed by now
    events = as_triples(file_events(svc_env))
    assert problems(before, after, {"src/X/a", "src/N/X/b"}, before | after | {"src/X/b"}, events) == []
    assert "src/N/X/a" not in {p for p, _ in reports(events)}
    h = svc_env.call("daemon.status")["subsystems"]["watcher"]["roots"][str(svc_env.project)]
    assert h["watched_dirs"] == 3 and h["unwatched_dirs"] == 0  # src, src/N, src/N/X


def test_non_utf8_name_through_the_service(svc_env: ServiceEnv) -> None:
    """Defect 6: a name that is not UTF-8 reaches followers, history and aiwgctl, losslessly, and
    nothing stops working after it."""
    cfg = json.loads(json.dumps(WATCH))
    cfg["watch"]["debounce_ms"] = 0
    svc_env.write_project_config(cfg)
    src = svc_env.project / "src"
    src.mkdir()
    svc_env.start()
    follower = svc_env.connect()
    follower.request("events.subscribe", {"type": "file.*"})
    raw = os.path.join(os.fsencode(src), b"bad\xff.txt")
    with open(raw, "w") as f:
        f.write("x")
    note = follower.read()
    data = note["params"]["data"]
    assert note["params"]["type"] == "file.create" and data["path"] == "src/bad\ufffd.txt"
    assert base64.b64decode(data["path_b64"]) == b"src/bad\xff.txt"
    assert base64.b64decode(data["abs_path_b64"]) == raw
    (src / "good.txt").write_text("still flowing")
    later = [follower.read()["params"]["data"]["path"]]
    while later[-1] != "src/good.txt" and len(later) < 4:  # (debounce 0: the bad name's modify may come first)
        later.append(follower.read()["params"]["data"]["path"])
    assert later[-1] == "src/good.txt", later  # the follower keeps getting events
    listed = [e["data"]["path"] for e in file_events(svc_env)]
    assert listed[0] == "src/bad\ufffd.txt" and "src/good.txt" in listed
    res = svc_env.ctl("events", check=True)
    assert "src/bad\ufffd.txt" in res.stdout and "src/good.txt" in res.stdout
    res = svc_env.ctl("events", "--json", check=True)
    evs = [json.loads(line) for line in res.stdout.splitlines()]
    assert any(base64.b64decode(e["data"].get("path_b64", "")) == b"src/bad\xff.txt" for e in evs)
    svc_env.ctl("events", "--dead", check=True)
    follower.close()


def test_bus_carries_any_string_it_is_given(tmp_path: Path) -> None:
    """Whatever a source publishes, history, followers and the persisted DLQ can encode it."""

    async def main() -> None:
        bus = EventBus(tmp_path / "dlq.json", retry_delays=(0.01,), jitter=0)
        await bus.start()

        def boom(_ev: Any) -> None:
            raise RuntimeError("no")

        bus.subscribe("file.*", boom, name="boom", retries=0)
        ev = bus.publish("file.create", "/p", {"path": "src/bad\udcff.txt", "list": ["x\udcfe"]}, "test")
        assert ev.data == {"path": "src/bad\ufffd.txt", "list": ["x\ufffd"]}
        deadline = time.monotonic() + 5
        while not bus.dlq and time.monotonic() < deadline:
            await __import__("asyncio").sleep(0.01)
        await bus.stop()
        again = EventBus(tmp_path / "dlq.json")
        again._load_dlq()
        assert [d.event.data["path"] for d in again.dlq] == ["src/bad\ufffd.txt"]

    uvloop.run(main())
