"""Nothing lost between a change and the one who follows it (issue 23): sequence numbers, gaps, resuming.

Real inotify, the real service, real sockets: a 17,000-file directory moved three times reaches a prompt
follower and a slow one whole; a follower whose events fell out of a small history is told exactly how many
and goes on; ``aiwgctl events -f`` resumes after a restart of the service from its last sequence number.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from service_fixture import BIN, RpcConn, ServiceEnv, wait_for

N_FILES = 17_000


class Reader:
    """A follower that reads everything as it comes, in a thread."""

    def __init__(self, conn: RpcConn) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []
        self.gaps: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                msg = self.conn.read()
                if msg.get("method") == "events.event":
                    self.events.append(msg["params"])
                elif msg.get("method") == "events.gap":
                    self.gaps.append(msg["params"])
        except (EOFError, OSError, ValueError):
            return


def subscribe(service: ServiceEnv, **params: Any) -> RpcConn:
    c = service.connect(timeout=60)
    reply = c.request("events.subscribe", params)
    assert reply["result"]["subscribed"] is True
    return c


def read_notes(conn: RpcConn, until_seq: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a (slow) follower's stream up to the event numbered ``until_seq``."""
    events: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    seen = 0
    while seen < until_seq:
        msg = conn.read()
        if msg.get("method") == "events.event":
            events.append(msg["params"])
            seen = msg["params"]["seq"]
        elif msg.get("method") == "events.gap":
            gaps.append(msg["params"])
            seen = msg["params"]["to"]
    return events, gaps


def flushes(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        if ev["type"] == "file.batch":
            out[ev["data"]["flush"]].append(ev["data"])
    return out


def assert_whole(events: list[dict[str, Any]], moves: int) -> None:
    """Every flush complete (``sum(len(part.paths)) == count``), and ``moves`` directory moves among them."""
    fl = flushes(events)
    for fid, parts in fl.items():
        assert sum(len(part["paths"]) for part in parts) == parts[0]["count"], fid
        assert sorted(part["part"] for part in parts) == list(range(1, parts[0]["parts"] + 1)), fid
    big = [parts for parts in fl.values() if parts[0]["count"] == 2 * N_FILES]
    assert len(big) == moves, {fid: (p[0]["count"], p[0]["kinds"]) for fid, p in fl.items()}


def assert_contiguous(events: list[dict[str, Any]], gaps: list[dict[str, Any]], start: int, end: int) -> None:
    """Each number from ``start`` to ``end`` is either an event received or inside a gap it was told of."""
    got = {ev["seq"] for ev in events}
    told = {s for g in gaps for s in range(g["from"], g["to"] + 1)}
    assert all(g["lost"] == g["to"] - g["from"] + 1 for g in gaps)
    assert not got & told
    assert got | told >= set(range(start, end + 1)), sorted(set(range(start, end + 1)) - got - told)[:10]
    seqs = [ev["seq"] for ev in events]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


def big_tree(service: ServiceEnv) -> Path:
    data = service.project / "data"
    src = data / "d0"
    src.mkdir(parents=True)
    for i in range(N_FILES):
        os.close(os.open(src / f"f{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644))
    service.write_project_config({"watch": {"debounce_ms": 300, "paths": [
        {"path": "data/", "events": ["create", "modify", "delete"]}]}})
    return data


def move_and_wait(service: ServiceEnv, data: Path, prompt: Reader, frm: int, to: int) -> None:
    before = len(flushes(prompt.events))
    os.rename(data / f"d{frm}", data / f"d{to}")

    def done() -> bool:
        fl = flushes(prompt.events)
        return len(fl) > before and all(sum(len(x["paths"]) for x in p) == p[0]["count"] for p in fl.values())

    wait_for(done, 120, interval=0.1, what=f"the move d{frm} -> d{to} to reach the prompt follower")


def last_seq(service: ServiceEnv) -> int:
    return service.call("daemon.status")["subsystems"]["router"]["seq"]


def test_a_big_move_reaches_prompt_and_slow_followers_whole(svc_env: ServiceEnv) -> None:
    service = svc_env
    data = big_tree(service)
    service.start()
    wait_for(lambda: service.call("daemon.status")["subsystems"]["watcher"]["watched_dirs"] >= 2, 60,
             what="the data dir to be watched")
    start = last_seq(service) + 1
    prompt = Reader(subscribe(service, type="file.*"))
    slow = subscribe(service, type="*")  # reads nothing until the end
    for n in range(3):
        move_and_wait(service, data, prompt, n, n + 1)
    end = last_seq(service)
    assert_whole(prompt.events, 3)
    assert prompt.gaps == []
    events, gaps = read_notes(slow, end)
    # the default history (8 MiB) holds three moves of 17,000 files: the slow follower loses nothing either
    assert gaps == []
    assert_contiguous(events, gaps, start, end)
    assert_whole(events, 3)
    # the same events by sequence number, paged (how a follower that reconnects catches up)
    paged: list[dict[str, Any]] = []
    since = start - 1
    while since is not None:
        res = service.call("events.query", {"since": since, "limit": 1000})
        paged += res["events"]
        since = res["next"]
    assert [e["seq"] for e in paged] == [e["seq"] for e in events]
    assert "gap" not in service.call("events.query", {"since": start - 1, "limit": 1})

    # now a history of 256 KiB: a follower that does not read is told exactly what it lost, then goes on
    cfg = service.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"daemon": {"event_history_bytes": 262144}}))
    service.call("daemon.reload")
    wait_for(lambda: service.call("daemon.status")["subsystems"]["router"]["history"]["max_bytes"] == 262144,
             what="the smaller history to be in force")
    start = last_seq(service) + 1
    slow2 = subscribe(service, type="file.*")
    for n in range(3, 6):
        move_and_wait(service, data, prompt, n, n + 1)
    service.call("events.list", {"limit": 1})  # anything: the slow follower stays unread meanwhile
    end = last_seq(service)
    events, gaps = read_notes(slow2, end)
    assert gaps and sum(g["lost"] for g in gaps) > 0
    assert_contiguous(events, gaps, start, end)
    res = service.call("events.query", {"since": start - 1, "limit": 10})
    assert res["gap"]["from"] == start and res["gap"]["lost"] == res["gap"]["to"] - start + 1
    assert res["events"][0]["seq"] == res["gap"]["to"] + 1
    assert "Traceback" not in service.log_text()


def test_aiwgctl_events_follow_resumes_after_a_restart(svc_env: ServiceEnv, tmp_path: Path) -> None:
    service = svc_env
    service.start()
    out = tmp_path / "follow.out"
    err = tmp_path / "follow.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        follower = subprocess.Popen([str(BIN / "aiwgctl"), "events", "-f", "--json", "--type", "project.*"],
                                    env=service.env, stdout=fo, stderr=fe)
    try:
        def printed() -> list[dict[str, Any]]:
            return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

        def added(name: str) -> bool:
            return any(e["type"] == "project.added" and e["project"].endswith(name) for e in printed())

        wait_for(lambda: service.call("daemon.status")["subsystems"]["router"]["followers"] >= 1,
                 what="aiwgctl events -f to subscribe")
        for name in ("a1", "a2"):
            (tmp_path / name).mkdir()
            service.call("project.add", {"path": str(tmp_path / name)})
        wait_for(lambda: added("a2"), what="the first events to be printed")
        before = printed()[-1]["seq"]
        assert service.stop() == 0
        # while the service is down, the follower waits (and says so) instead of exiting
        wait_for(lambda: "waiting for it to come back" in err.read_text(), what="the follower to wait")
        assert follower.poll() is None
        service.start(projects=[])
        for name in ("b1", "b2"):
            (tmp_path / name).mkdir()
            service.call("project.add", {"path": str(tmp_path / name)})
        wait_for(lambda: added("b2"), 30, what="the follower to resume after the restart")
        seqs = [e["seq"] for e in printed()]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # nothing twice, numbers kept rising
        assert next(e for e in printed() if e["seq"] > before)["project"].endswith("b1")
        assert "reconnected" in err.read_text() and "Traceback" not in err.read_text()
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)


def test_sequence_numbers_survive_a_restart(svc_env: ServiceEnv) -> None:
    service = svc_env
    service.start()
    service.call("events.list", {"limit": 1})
    (service.project / "x").mkdir()
    service.call("project.add", {"path": str(service.project / "x")})
    first_run = last_seq(service)
    assert first_run >= 1
    ev = service.call("events.query", {"since": first_run - 1})["events"]
    assert ev and ev[-1]["seq"] == first_run
    assert service.stop() == 0
    service.start()
    # nothing retained from the first run: asking from before it says how many are gone, exactly
    res = service.call("events.query", {"since": 0, "limit": 1000})
    assert res["first_seq"] > first_run
    assert res["gap"] == {"from": 1, "to": res["first_seq"] - 1, "lost": res["first_seq"] - 1}
    assert all(e["seq"] > first_run for e in res["events"])
    bad = service.connect().request("events.query", {"since": -1})
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["param"] == "since"
