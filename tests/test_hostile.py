"""Hostile and broken input on the socket: every case gets a JSON-RPC error (never a dropped connection,
-32603 or a traceback), the log stays short, and memory stays bounded. Against the real service where the
case allows; the timers and budgets with small limits against a real RpcServer on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from service_fixture import RpcConn, ServiceEnv, wait_for
from test_tasks_api import start

from aiwg_service import protocol as p
from aiwg_service.rpc import MAX_STREAMS, READ_SIZE, RpcServer, bind_socket
from aiwg_service.tasks.model import Task, TaskState, new_task_id, utc_now
from aiwg_service.tasks.store import Store


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def req(method: str, params: Any = None, rid: Any = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode()


def ask(c: RpcConn, raw: bytes) -> Any:
    c.send_raw(raw + b"\n")
    return c.read()


def assert_quiet_log(env: ServiceEnv) -> None:
    text = env.log_text()
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    assert max((len(x) for x in text.splitlines()), default=0) < 1000  # client input is cut to 200 bytes


@pytest.fixture
def hsvc(svc_env: ServiceEnv) -> ServiceEnv:
    return start(svc_env)


def test_malformed_requests_all_get_errors_on_one_connection(hsvc: ServiceEnv) -> None:
    """Pipelined on one connection: each gets its error, and the ping after them still gets its reply."""
    c = hsvc.connect()
    deep = b'{"jsonrpc":"2.0","method":"ping","params":' + b"[" * 5000 + b"]" * 5000 + b',"id":1}'
    cases: list[tuple[bytes, int, Any]] = [
        (b"[" * 100_000, -32700, None),  # deep nesting, not even closed
        (deep, -32700, None),
        (b'{"jsonrpc":"2.0","method":"task.list","params":{"project":"\xff"},"id":7}', -32700, 7),
        (b'{"jsonrpc":"2.0","method":"task.list","params":["\xfe"],"id":8}', -32700, 8),
        (b'{"jsonrpc":"2.0","method":"ping","params":null,"id":9}', -32600, 9),  # params must be structured
        (b"\x0b\x0c", -32700, None),  # not JSON whitespace: not silently skipped
        (b'{"jsonrpc":"2.0","method":"' + b"m" * 100_000 + b'","id":10}', -32601, 10),
        (req("automation.test", {"ruleId": "x", "event": {"a": json.loads("[" * 900 + "]" * 900)}}, 11), None, 11),
    ]
    for raw, code, rid in cases:
        r = ask(c, raw)
        assert r["id"] == rid, (raw[:60], r)
        if code is not None:
            assert r["error"]["code"] == code, (raw[:60], r)
            assert len(r["error"]["message"]) < 400
        else:
            assert r["error"]["code"] in (-32700, -32602), r
    # a batch with one bad item is -32700 as a whole (invalid UTF-8 makes the line not JSON text)
    batch = (b'[{"jsonrpc":"2.0","method":"ping","id":1},{"jsonrpc":"2.0","method":"ping","params":{"x":"\xff"},'
             b'"id":2}]')
    r = ask(c, batch)
    at = batch.index(b"\xff")
    assert r == {"jsonrpc": "2.0", "id": None,
                 "error": {"code": -32700, "message": f"Parse error: invalid UTF-8 at byte {at}"}}
    assert c.request("ping")["result"]["pong"] is True
    assert_quiet_log(hsvc)


@pytest.mark.parametrize(("method", "params", "param"), [
    ("project.add", {"path": "/tmp/a\u0000b"}, "path"),
    ("project.remove", {"path": "x\u0000"}, "path"),
    ("task.list", {"project": "/p\u0000"}, "project"),
    ("task.stats", {"project": "\u0000"}, "project"),
    ("task.submit", {"prompt": "x", "project": "/a\u0000"}, "project"),
    ("events.list", {"project": "/a\u0000"}, "project"),
    ("automation.status", {"project": "/a\u0000"}, "project"),
    ("task.submit", {"prompt": "echo visible\u0000; echo hidden", "agent": "sh"}, "prompt"),
    ("chat.send", {"message": "hi\u0000there"}, "message"),
    ("task.get", {"taskId": "t-\u0000"}, "taskId"),
    ("project.add", {"path": "/tmp/" + "n" * 300}, "path"),  # ENAMETOOLONG
    ("project.add", {"path": "/" + "d/" * 3000}, "path"),  # PATH_MAX
    ("task.list", {"project": "/" + "x" * 200_000}, "project"),
    ("task.logs", {"taskId": "t-x", "offset": 2**63 - 1}, "offset"),
    ("task.logs", {"taskId": "t-x", "offset": 2**64}, "offset"),
    ("task.submit", {"prompt": "x", "timeout": 1e300}, "timeout"),
])
def test_invalid_params_name_the_param(hsvc: ServiceEnv, method: str, params: dict[str, Any], param: str) -> None:
    c = hsvc.connect()
    err = c.request(method, params)["error"]
    assert err["code"] == -32602 and err["data"]["param"] == param, err
    assert len(err["message"]) < 400
    assert c.request("ping")["result"]["pong"] is True
    assert_quiet_log(hsvc)


def test_nul_prompt_is_never_stored(hsvc: ServiceEnv) -> None:
    c = hsvc.connect()
    assert c.request("task.submit", {"prompt": "echo visible\u0000; echo hidden", "agent": "sh"})["error"]
    assert c.call("task.list", {}) == []
    # the priority the AIWG CLI sends for --priority abc is null: the default
    t = c.call("task.submit", {"prompt": "true", "agent": "sh", "priority": None, "wait": True})
    assert t["priority"] == 0 and t["state"] == "completed"
    assert c.call("chat.send", {"message": "hi", "priority": None})["taskId"]


def test_huge_offset_past_the_end_reads_nothing(hsvc: ServiceEnv) -> None:
    t = hsvc.call("task.submit", {"prompt": "echo hi", "agent": "sh", "wait": True})
    res = hsvc.call("task.logs", {"taskId": t["id"], "offset": p.MAX_OFFSET})
    assert res["data"] == "" and res["eof"] is True and res["offset"] == res["size"]


def seed_tasks(env: ServiceEnv, n: int, prompt_bytes: int) -> list[str]:
    env.state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    ids = []
    with Store(env.state_dir) as store:
        for i in range(n):
            t = Task(id=new_task_id(), project=str(env.project), prompt=f"{i} " + "p" * prompt_bytes,
                     state=TaskState.completed, created_at=utc_now(), result="r" * 200)
            store.insert(t)
            ids.append(t.id)
    return ids


def test_a_client_that_never_reads_costs_one_budget(svc_env: ServiceEnv) -> None:
    """200 task.list (limit 1000) in one send, never read: RSS stays flat, other clients are served, and
    once the hog reads, every one of its 200 replies is there."""
    ids = seed_tasks(svc_env, 1000, 1500)
    start(svc_env)
    pid = svc_env.proc.pid  # type: ignore[union-attr]
    before = rss_mb(pid)
    hog = svc_env.connect(timeout=30)
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.send_raw(b"".join(req("task.list", {"limit": 1000}, i) + b"\n" for i in range(200)))
    other = svc_env.connect()
    for _ in range(20):
        assert other.request("ping")["result"]["pong"] is True
    time.sleep(0.5)
    grown = rss_mb(pid) - before
    assert grown < 40, f"RSS grew by {grown:.0f} MB"
    seen = []
    for _ in range(200):
        r = hog.read()
        assert r["result"][0]["id"] == ids[-1]  # newest first
        assert len(r["result"]) < 1000  # a reply stops near LIST_BYTES: page on with before = last id
        seen.append(r["id"])
    assert seen == list(range(200))
    page = hog.request("task.list", {"limit": 1000, "before": r["result"][-1]["id"]})["result"]
    assert page[0]["id"] == ids[-1 - len(r["result"])]


def test_follow_catch_up_streams_under_the_budget(svc_env: ServiceEnv) -> None:
    """30 follows of a finished 10 MB log from clients that do not read: RSS stays flat; a reader gets it all."""
    svc_env.state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    logs = svc_env.state_dir / "logs"
    logs.mkdir(mode=0o700)
    body = (b"0123456789abcdef" * 64 + b"\n") * 10_000  # ~10 MB
    tid = new_task_id()
    (logs / f"{tid}.log").write_bytes(body)
    with Store(svc_env.state_dir) as store:
        store.insert(Task(id=tid, project=str(svc_env.project), prompt="x", state=TaskState.completed,
                          created_at=utc_now(), log_path=str(logs / f"{tid}.log")))
    start(svc_env)
    pid = svc_env.proc.pid  # type: ignore[union-attr]
    before = rss_mb(pid)
    hogs = []
    for _ in range(30):
        h = svc_env.connect(timeout=60)
        h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        h.send_raw(req("task.logs", {"taskId": tid, "follow": True, "limit": 1}) + b"\n")
        hogs.append(h)
    time.sleep(1.0)
    assert svc_env.call("ping")["pong"] is True
    grown = rss_mb(pid) - before
    assert grown < 60, f"RSS grew by {grown:.0f} MB"
    reader = hogs[0]
    first = reader.read()
    got = len(first["result"]["data"].encode())
    while True:
        msg = reader.read()
        got += len(msg["params"]["data"].encode())
        if msg["params"].get("done"):
            break
    assert got == len(body) and msg["params"]["state"] == "completed"


def test_subscription_cap_per_connection(hsvc: ServiceEnv) -> None:
    c = hsvc.connect()
    for i in range(MAX_STREAMS):
        assert c.request("events.subscribe", {"type": f"x{i}.*"})["result"]["subscribed"] is True
    err = c.request("events.subscribe", {})["error"]
    assert err["code"] == -32600 and str(MAX_STREAMS) in err["message"]
    assert c.request("ping")["result"]["pong"] is True  # the connection stays usable
    c.close()


def test_max_connections(svc_env: ServiceEnv) -> None:
    start(svc_env, daemon={"max_connections": 5})
    held = [svc_env.connect() for _ in range(5)]
    assert held[0].call("ping")["pong"] is True
    extra = RpcConn(svc_env.socket)
    r = extra.read()  # refused at once, with a reason
    assert r["id"] is None and r["error"]["code"] == -32000 and "too many connections" in r["error"]["message"]
    with pytest.raises((EOFError, ConnectionResetError)):
        extra.read()
    res = svc_env.ctl("ping")
    assert res.returncode == 1 and "too many connections" in res.stderr and "not running" not in res.stderr
    held.pop().close()
    wait_for(lambda: svc_env.ctl("ping").returncode == 0, what="a free connection slot")


def test_every_state_file_is_private(svc_env: ServiceEnv) -> None:
    svc_env.state_dir.mkdir(parents=True, mode=0o700)
    old = svc_env.state_dir / "projects.json"
    old.write_text('{"projects": []}')
    os.chmod(old, 0o644)  # left by an older version
    start(svc_env)
    svc_env.call("task.submit", {"prompt": "echo hi", "agent": "sh", "wait": True})
    svc_env.call("automation.status")
    assert svc_env.stop() == 0
    files = [q for q in svc_env.state_dir.rglob("*")]
    assert any(q.name == "tasks.db" for q in files) and any(q.suffix == ".log" for q in files)
    for q in files:
        mode = stat.S_IMODE(q.lstat().st_mode)
        assert mode == (0o700 if q.is_dir() else 0o600), f"{q} is {mode:o}"


# -- the timers and budgets, with small limits, on a real RpcServer ------------------------------------------


async def _serve(tmp: Path, **attrs: Any) -> tuple[RpcServer, Path]:
    server = RpcServer()
    server.register("ping", lambda _p, _c: {"pong": True})
    for k, v in attrs.items():
        setattr(server, k, v)
    path = tmp / "s" / "rpc.sock"
    await server.serve(bind_socket(path))
    return server, path


def test_partial_line_times_out(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], bytes, dict[str, Any], dict[str, Any]]:
        server, path = await _serve(tmp_path, partial_line_timeout=0.3)
        r, w = await asyncio.open_unix_connection(str(path))
        w.write(b'{"jsonrpc":"2.0","method":"pi')
        reply = json.loads(await asyncio.wait_for(r.readline(), 10))
        eof = await asyncio.wait_for(r.read(), 10)
        # a client idle between complete lines is never cut, however long it stays
        r2, w2 = await asyncio.open_unix_connection(str(path))
        w2.write(b'{"jsonrpc":"2.0","method":"ping","id":1}\n')
        await r2.readline()
        await asyncio.sleep(0.6)
        w2.write(b'{"jsonrpc":"2.0","method":"ping","id":2}\n')
        ok = json.loads(await r2.readline())
        # and a line that arrives in pieces within the time is served (a generous limit: no race on a busy box)
        server.partial_line_timeout = 10.0
        w2.write(b'{"jsonrpc":"2.0",')
        await asyncio.sleep(0.05)
        w2.write(b'"method":"ping","id":3}\n')
        pieces = json.loads(await r2.readline())
        await server.close()
        return reply, eof, ok, pieces

    reply, eof, ok, pieces = asyncio.run(scenario())
    assert reply["error"]["code"] == -32600 and "incomplete" in reply["error"]["message"]
    assert eof == b""
    assert ok == {"jsonrpc": "2.0", "id": 2, "result": {"pong": True}}
    assert pieces == {"jsonrpc": "2.0", "id": 3, "result": {"pong": True}}


def test_partial_lines_share_one_input_budget(tmp_path: Path) -> None:
    """Many connections each holding part of a big line: past the server-wide budget they stop being read
    (the rest waits in the kernel), and they are served again once the total falls."""

    async def scenario() -> tuple[int, int, list[Any]]:
        budget = 1024 * 1024
        server, path = await _serve(tmp_path, input_budget=budget)
        conns = [await asyncio.open_unix_connection(str(path)) for _ in range(20)]
        head = b'{"jsonrpc":"2.0","method":"ping","id":1,"params":{},"pad":"'
        for _r, w in conns:
            w.write(head + b"x" * 400_000)
        peak = starving = 0
        for _ in range(200):  # until the budget is hit (a busy machine may take a while to deliver it all)
            await asyncio.sleep(0.05)
            peak, starving = max(peak, server.input_bytes), max(starving, len(server.starving))
            if starving and server.input_bytes >= 1024 * 1024:
                break
        for _r, w in conns:
            w.write(b'"}\n')
        replies = [json.loads(await asyncio.wait_for(r.readline(), 20)) for r, _w in conns]
        await server.close()
        return peak, starving, replies

    peak, starving, replies = asyncio.run(scenario())
    # the budget, plus the one line allowed to finish, plus at most one read per connection
    assert peak <= 1024 * 1024 + p.MAX_LINE + 20 * READ_SIZE and starving > 0
    assert all(r["result"] == {"pong": True} for r in replies)  # every one served in the end


def test_log_is_not_flooded(hsvc: ServiceEnv) -> None:
    c = hsvc.connect()
    for _ in range(200):
        c.send_raw(b'{"jsonrpc":"2.0","method":"project.add","params":{"path":"/' + b"z" * 300_000 + b'"},"id":1}\n')
        assert c.read()["error"]["code"] == -32602
    with contextlib.suppress(OSError):
        c.close()
    assert len(hsvc.log_text()) < 20_000
    assert_quiet_log(hsvc)


def test_error_messages_cut_client_input(hsvc: ServiceEnv) -> None:
    c = hsvc.connect()
    for params in ({"state": "x" * 100_000}, {"k" * 100_000: 1}):
        err = c.request("task.list", params)["error"]
        assert err["code"] == -32602 and len(err["message"]) < 500 and len(json.dumps(err["data"])) < 600


def test_event_patterns_cannot_backtrack_catastrophically(hsvc: ServiceEnv) -> None:
    """``*?*?*?…`` as a regex takes a quarter second per event type (minutes over the history): the matcher
    for many-wildcard patterns is quadratic at worst, and the same as the regex on every answer."""
    import random
    import re

    from aiwg_service.events.bus import _wildcard_match, compile_pattern

    assert compile_pattern("*a" * 12 + "*c")("a" * 60 + "b") is False  # years as a regex
    assert compile_pattern("*?" * 10 + "z")("automation.loop_detected") is False
    assert compile_pattern("t*s*.*u*d")("task.queued") is True
    rng = random.Random(7)
    for _ in range(5000):
        pat = "".join(rng.choice("ab*?.") for _ in range(rng.randint(0, 8)))
        s = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 8)))
        rx = re.compile(re.escape(pat).replace(r"\*", ".*").replace(r"\?", "."))
        assert _wildcard_match(pat, s) == (rx.fullmatch(s) is not None), (pat, s)
    c = hsvc.connect()
    assert c.call("events.list", {"type": "*?" * 10 + "z"})["events"] == []
    err = c.request("events.subscribe", {"type": "*" * 300})["error"]
    assert err["code"] == -32602 and err["data"]["param"] == "type"


def test_a_subscriber_that_never_reads_has_events_dropped_and_counted(hsvc: ServiceEnv) -> None:
    sub = hsvc.connect()
    sub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sub.send_raw(b"".join(req("events.subscribe", {"type": "*"}, i) + b"\n" for i in range(MAX_STREAMS)))
    pid = hsvc.proc.pid  # type: ignore[union-attr]
    before = rss_mb(pid)
    c = hsvc.connect()
    batch = [{"jsonrpc": "2.0", "method": "task.submit", "params": {"prompt": f"echo {i}", "agent": "sh"}, "id": i}
             for i in range(40)]
    c.send_raw(json.dumps(batch).encode() + b"\n")
    assert len(c.read()) == 40
    # its 64 subscriptions fall behind in the bus's history (kept once for all of them), nothing is queued per
    # subscriber; what falls out of the history before it reads is a gap it will be told of (test_events_follow)
    wait_for(lambda: c.call("daemon.status")["subsystems"]["router"]["followers_behind"] >= MAX_STREAMS,
             30, what="the subscriber that does not read to fall behind")
    ipc = c.call("daemon.status")["subsystems"]["ipc"]
    assert ipc["max_connections"] == 256 and rss_mb(pid) - before < 40
    assert c.call("ping")["pong"] is True
