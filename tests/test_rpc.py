"""JSON-RPC 2.0 conformance and robustness, against the real service on its real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from service_fixture import RpcConn, ServiceEnv

from aiwg_service import protocol as p
from aiwg_service.rpc import RpcServer, bind_socket


def line(conn: RpcConn, raw: bytes) -> object:
    conn.send_raw(raw + b"\n")
    return conn.read()


def test_ping_has_the_aiwg_shape(service: ServiceEnv) -> None:
    c = service.connect()
    reply = c.request("ping")
    assert reply["jsonrpc"] == "2.0" and reply["id"] == 1
    assert reply["result"]["pong"] is True
    assert reply["result"]["timestamp"].startswith(time.strftime("%Y-", time.gmtime()))


def test_error_codes(service: ServiceEnv) -> None:
    c = service.connect()
    assert line(c, b"{bad json") == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
    r = line(c, b'{"jsonrpc":"1.0","method":"ping","id":7}')
    assert r["error"]["code"] == -32600 and r["id"] == 7  # the id is echoed when it can be read
    r = line(c, b'{"jsonrpc":"2.0","method":"ping","id":{"x":1}}')
    assert r["error"]["code"] == -32600 and r["id"] is None  # an id of the wrong type cannot be echoed
    r = line(c, b'{"jsonrpc":"2.0","method":5,"id":3}')
    assert r["error"]["code"] == -32600 and r["id"] == 3
    r = line(c, b'"just a string"')
    assert r["error"]["code"] == -32600 and r["id"] is None
    r = line(c, b'{"jsonrpc":"2.0","method":"no.such","id":"abc"}')
    assert r["error"] == {"code": -32601, "message": "Method not found: no.such"} and r["id"] == "abc"
    r = line(c, b'{"jsonrpc":"2.0","method":"project.add","params":{"path":5},"id":9}')
    assert r["error"]["code"] == -32602
    assert r["error"]["message"] == "Invalid params: path: Expected str, got int"
    assert r["error"]["data"]["param"] == "path"
    r = line(c, b'{"jsonrpc":"2.0","method":"project.add","params":{},"id":10}')
    assert r["error"]["message"] == "Missing required parameter: path"
    r = line(c, b'{"jsonrpc":"2.0","method":"project.add","params":{"path":"/x","pth":1},"id":11}')
    assert r["error"]["data"]["param"] == "pth"
    r = line(c, b'{"jsonrpc":"2.0","method":"ping","params":"str","id":12}')
    assert r["error"]["code"] == -32600  # params must be an object or an array
    r = line(c, b'{"jsonrpc":"2.0","method":"ping","id":null}')
    assert r["id"] is None and r["result"]["pong"] is True  # a null id is a request, not a notification


def test_batches_and_notifications(service: ServiceEnv) -> None:
    c = service.connect()
    assert line(c, b"[]") == {"jsonrpc": "2.0", "id": None,
                              "error": {"code": -32600, "message": "Invalid Request: empty batch"}}
    r = line(c, b"[1,2]")
    assert [e["error"]["code"] for e in r] == [-32600, -32600]
    r = line(c, b'[{"jsonrpc":"2.0","method":"ping","id":1},{"jsonrpc":"2.0","method":"ping"},'
                b'{"jsonrpc":"2.0","method":"nope","id":2},{"jsonrpc":"2.0","method":"project.list","id":3}]')
    assert sorted(x["id"] for x in r) == [1, 2, 3]
    # notifications get no reply, even when they fail; a batch of only notifications gets nothing
    c.send_raw(b'{"jsonrpc":"2.0","method":"ping"}\n{"jsonrpc":"2.0","method":"nope"}\n'
               b'[{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","method":"nope"}]\n')
    assert c.request("ping")["id"] == c.next_id  # the next thing read is the reply to this request


def test_positional_params(service: ServiceEnv) -> None:
    c = service.connect()
    r = line(c, json.dumps({"jsonrpc": "2.0", "method": "project.add", "params": [str(service.project)],
                            "id": 1}).encode())
    assert r["result"]["project"]["path"] == str(service.project)


def test_oversized_line_is_refused_and_closed(service: ServiceEnv) -> None:
    c = service.connect()
    big = b'{"jsonrpc":"2.0","method":"ping","params":{"x":"' + b"a" * (p.MAX_LINE + 10) + b'"},"id":1}\n'
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        c.send_raw(big)
    r = c.read()
    assert r["error"]["code"] == -32600 and "exceeds" in r["error"]["message"]
    with pytest.raises((EOFError, ConnectionResetError)):
        c.read()
    assert service.call("ping")["pong"] is True  # the service is fine


def test_an_unterminated_oversized_line_is_refused_before_its_end(service: ServiceEnv) -> None:
    """No newline ever comes: the buffer check alone must refuse it (and the service's memory stays bounded)."""
    c = service.connect()
    head = b'{"jsonrpc":"2.0","method":"ping","params":{"x":"'
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        c.send_raw(head + b"a" * (p.MAX_LINE + 4096))  # and no newline
    r = c.read()
    assert r["id"] is None and r["error"]["code"] == -32600 and "exceeds" in r["error"]["message"]
    with pytest.raises((EOFError, ConnectionResetError)):
        c.read()
    assert service.call("ping")["pong"] is True


def test_stalled_and_garbage_clients_do_not_block_others(service: ServiceEnv) -> None:
    stalled = service.connect()
    stalled.send_raw(b'{"jsonrpc":"2.0","method":"pi')  # half a request, then nothing
    garbage = service.connect()
    garbage.send_raw(os.urandom(4096).replace(b"\n", b" ") + b"\n")
    assert garbage.read()["error"]["code"] in (-32700, -32600)
    t0 = time.monotonic()
    assert service.call("ping")["pong"] is True
    assert time.monotonic() - t0 < 2


def test_a_client_that_never_reads_does_not_block_others(service: ServiceEnv) -> None:
    hog = service.connect()
    hog.sock.setblocking(False)
    req = b'{"jsonrpc":"2.0","method":"daemon.status","id":1}\n' * 2000
    sent = 0
    try:
        while sent < 50 * len(req):
            sent += hog.sock.send(req)
    except BlockingIOError:
        pass  # the service stopped reading from the hog: backpressure works
    assert service.call("ping")["pong"] is True


def test_two_hundred_clients_at_once(service: ServiceEnv) -> None:
    conns = [service.connect() for _ in range(200)]
    results: list[bool] = []
    lock = threading.Lock()

    def run(c: RpcConn) -> None:
        ok = all(c.call("ping")["pong"] for _ in range(5))
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [True] * 200


def test_socket_is_private(service: ServiceEnv) -> None:
    assert stat.S_IMODE(service.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(service.socket.parent.stat().st_mode) == 0o700


CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b'{"jsonrpc":"2.0","method":"ping","id":1}\\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # the refusal is sent (and the socket closed) as soon as we connect
print(s.makefile().readline().strip())
"""


def test_another_user_is_refused(svc_env: ServiceEnv) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to run a client under another uid")
    # a socket outside pytest's private tmp tree, so that only our own modes stand in the way
    sock_dir = Path(tempfile.mkdtemp(prefix="aiwg-uid-", dir="/tmp"))
    sock = sock_dir / "aiwg" / "daemon.sock"
    try:
        svc_env.socket = sock
        svc_env.start("--socket", str(sock))
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", CLIENT,
               str(sock)]
        # layer 1: the 0700 directory keeps other users out entirely
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert out.stdout.strip() == "EACCES", out.stderr
        # layer 2: even if the file modes were loosened, the peer uid check refuses them
        os.chmod(sock_dir, 0o755)
        os.chmod(sock.parent, 0o755)
        os.chmod(sock, 0o666)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert out.stdout.startswith("{"), (out.stdout, out.stderr)
        reply = json.loads(out.stdout)
        assert reply["error"]["code"] == -32003 and "another user" in reply["error"]["message"]
        assert "refused a connection from uid 65534" in svc_env.log_text()
        assert svc_env.call("ping")["pong"] is True  # our own user still gets in
    finally:
        svc_env.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_internal_error_leaks_nothing(tmp_path: Path) -> None:
    """A handler bug answers -32603 with a generic message; the detail goes to the log only."""

    async def scenario() -> dict[str, object]:
        server = RpcServer()

        def broken(_params: object, _conn: object) -> None:
            raise RuntimeError("secret internal detail /home/x/.token")

        server.register("ping", broken)
        sock_path = tmp_path / "s" / "rpc.sock"
        await server.serve(bind_socket(sock_path))
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b'{"jsonrpc":"2.0","method":"ping","id":1}\n')
        reply = json.loads(await reader.readline())
        writer.close()
        await server.close()
        return reply

    reply = asyncio.run(scenario())
    assert reply["error"]["code"] == -32603
    assert "secret" not in json.dumps(reply) and "Traceback" not in json.dumps(reply)


def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "d" / "x.sock"
    first = bind_socket(path)
    from aiwg_service.rpc import SocketInUse

    with pytest.raises(SocketInUse):
        bind_socket(path)
    first.close()  # now it's stale: the file is there but nobody listens
    second = bind_socket(path)
    assert path.exists()
    second.close()
    s = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):
        s.connect(str(path))


def test_stopping_service_refuses_new_work_but_answers_reads(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        server = RpcServer()
        server.register("ping", lambda _p, _c: {"pong": True})
        server.register("project.add", lambda _p, _c: {"added": True})
        sock_path = tmp_path / "s" / "rpc.sock"
        await server.serve(bind_socket(sock_path))
        server.accepting = False  # what a SIGTERM does first
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(b'{"jsonrpc":"2.0","method":"project.add","params":{"path":"/x"},"id":1}\n'
                     b'{"jsonrpc":"2.0","method":"ping","id":2}\n')
        first = json.loads(await reader.readline())
        second = json.loads(await reader.readline())
        writer.close()
        await server.close()
        return first, second

    refused, ping = asyncio.run(scenario())
    assert refused["error"]["code"] == -32000 and "stopping" in refused["error"]["message"]
    assert ping["result"] == {"pong": True}


def test_close_answers_requests_already_accepted(tmp_path: Path) -> None:
    """A graceful stop (systemctl restart) must not reset a connection whose request is in flight."""

    async def scenario() -> list[dict[str, object]]:
        server = RpcServer()

        async def slow(_p: object, _c: object) -> dict[str, bool]:
            await asyncio.sleep(0.2)
            return {"pong": True}

        server.register("ping", lambda _p, _c: {"pong": True})
        server.register("daemon.status", slow)
        sock_path = tmp_path / "s" / "rpc.sock"
        await server.serve(bind_socket(sock_path))
        r1, w1 = await asyncio.open_unix_connection(str(sock_path))
        w1.write(b'{"jsonrpc":"2.0","method":"daemon.status","id":1}\n')  # a handler still running at close
        await w1.drain()
        r2, w2 = await asyncio.open_unix_connection(str(sock_path))
        await asyncio.sleep(0.02)  # accepted, nothing sent yet
        closing = asyncio.ensure_future(server.close())
        w2.write(b'{"jsonrpc":"2.0","method":"ping","id":2}\n')  # sent just as the stop begins
        await w2.drain()
        replies = [json.loads(await r1.readline()), json.loads(await r2.readline())]
        await closing
        return replies

    slow_reply, ping_reply = asyncio.run(scenario())
    assert slow_reply["result"] == {"pong": True}
    assert ping_reply["result"] == {"pong": True}
