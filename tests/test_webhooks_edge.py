"""The webhook listener cannot be wedged (issue 23): 1,100 half-open connections while `aiwgctl ping` keeps
answering; caps per source and in total, answered 503 at once; slow senders closed; refusals logged once per
interval with a count; a malformed request or a sender gone mid-body logs no traceback."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time

from service_fixture import ServiceEnv, wait_for
from test_webhooks import setup, start
from webhook_support import free_port

HALF_OPEN = 1100


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def webhooks(env: ServiceEnv) -> dict[str, object]:
    return env.call("daemon.status")["subsystems"]["webhooks"]


def test_half_open_connections_cannot_wedge_the_service(svc_env: ServiceEnv) -> None:
    env = svc_env
    raise_fd_limit(HALF_OPEN + 512)
    port = free_port()
    setup(env, port)
    cfg = env.config_home / "aiwg" / "daemon.json"
    doc = json.loads(cfg.read_text())
    doc["webhook"].update({"max_connections": 200, "max_connections_per_source": 150, "header_timeout_seconds": 3})
    cfg.write_text(json.dumps(doc))
    start(env)
    socks: list[socket.socket] = []
    began = time.monotonic()
    try:
        for i in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the headers
            socks.append(s)
            if i % 100 == 0:
                assert env.ctl("ping").returncode == 0  # the RPC socket keeps answering throughout
        assert env.ctl("ping").returncode == 0
        st = webhooks(env)
        assert st["open_connections"] <= 150 and st["refused_connections"] >= HALF_OPEN - 150, st

        # the refused ones were answered 503 and closed; the admitted ones are closed within the header deadline
        def closed(s: socket.socket) -> bool:
            s.settimeout(0.01)
            try:
                data = s.recv(4096)
            except TimeoutError:
                return False
            except OSError:
                return True
            return data == b"" or data.startswith(b"HTTP/1.1 503") or data.startswith(b"HTTP/1.1 408")

        wait_for(lambda: all(closed(s) for s in socks), 30, interval=0.5, what="every half-open connection closed")
        assert time.monotonic() - began < 60
        wait_for(lambda: webhooks(env)["open_connections"] == 0, what="the listener to hold no connection")
        assert webhooks(env)["timed_out_connections"] >= 1
        log = env.log_text()
        assert log.count("refused connections over the cap") <= 5, log[-2000:]
        assert log.count("sent no complete request in time") <= 5
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
    # malformed requests and senders gone mid-body: answered or closed, one throttled line, no traceback
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GARBAGE \x00\x01 nonsense\r\n\r\n")
            with contextlib.suppress(OSError):
                s.recv(1024)
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /hooks/gh HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n{\"a\":")
    body = json.dumps({"zen": "ok"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /hooks/nope HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        assert s.recv(100).startswith(b"HTTP/1.1 404")  # still serving
    assert env.ctl("ping").returncode == 0
    log = env.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert len(log) < 200_000
