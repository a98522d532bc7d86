"""What trust costs: the client's checks per connection, and the service's policy gate per decision and per call.

    python bench/trust.py [--n 20000] [--conns 2000]

Client side: listens on a Unix socket in a private temp directory (a thread accepts and closes), then times

  * floor:   ``_socket`` connect + close (what any client pays);
  * checked: the same, plus the socket-directory check (stat) and the SO_PEERCRED uid check, as
             ``aiwg_service.client.Client`` does on every connection;
  * each check alone.

Service side (the policy gate, issue 22): the gate's cost per decision; then two RPC servers in one event loop
(uvloop, as the service) on two sockets with the same handlers, one with the gate; a blocking client
alternates batches between them, so load on the machine hits both alike, and prints the gate's added cost per
call (identity looked up once per connection, then cached) and per new connection (identity lookup
included) as a share of a ping round trip. The issue's bound: < 5% per call.

``aiwgctl ping`` as a whole (a process start) is measured by ``bench/cli.py``.
"""

from __future__ import annotations

import _socket
import argparse
import asyncio
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service import protocol as p
from aiwg_service.client import check_socket_dir, peer_uid
from aiwg_service.policy import identity
from aiwg_service.policy.gate import Gate
from aiwg_service.rpc import RpcServer


def serve(sock: socket.socket) -> None:
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        c.close()


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def client_checks(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-trust-") as d:
        os.chmod(d, 0o700)
        path = os.path.join(d, "daemon.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1024)
        threading.Thread(target=serve, args=(srv,), daemon=True).start()

        def bare() -> None:
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            s.connect(path)
            s.close()

        def checked() -> None:
            check_socket_dir(path)
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            s.connect(path)
            if peer_uid(s) != os.getuid():
                raise SystemExit("peer uid mismatch")
            s.close()

        one = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        one.connect(path)
        per_call_us(bare, 500)  # warm up
        per_call_us(checked, 500)
        floor = min(per_call_us(bare, args.n) for _ in range(3))
        full = min(per_call_us(checked, args.n) for _ in range(3))
        dir_us = min(per_call_us(lambda: check_socket_dir(path), args.n) for _ in range(3))
        cred_us = min(per_call_us(lambda: peer_uid(one), args.n) for _ in range(3))
        one.close()
        srv.close()
    print(f"connections: {args.n} x 3 (best of 3)")
    print(f"floor   bare connect+close          {floor:7.2f} us")
    print(f"checked dir check + SO_PEERCRED     {full:7.2f} us   ratio {full / floor:.2f}x")
    print(f"        socket-dir check alone      {dir_us:7.2f} us")
    print(f"        SO_PEERCRED alone           {cred_us:7.2f} us")



def ns_per(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


class _Conn:
    peer_pid = os.getpid()
    caller = None


def micro(n: int) -> dict[str, float]:
    gate = Gate(lambda _p: None, lambda: {"*": ["telegram"]})
    owner = _Conn()
    owner.caller = identity.OWNER  # type: ignore[assignment]
    agent = _Conn()
    agent.caller = identity.Caller("agent", "/p", "t-1", 1, "token")  # type: ignore[assignment]
    params = p.TaskListParams()
    gate.refuse = lambda *a, **k: None  # type: ignore[method-assign]  # the log is not what is measured
    return {
        "decision, owner (cached identity)": ns_per(lambda: gate.rpc_hook("task.list", params, owner), n),
        "decision, agent read (scoped)": ns_per(lambda: gate.rpc_hook("task.list", p.TaskListParams(), agent), n),
        "decision, agent refused": ns_per(lambda: gate.rpc_hook("daemon.stop", None, agent), n),
        "decision, ping (no identity)": ns_per(lambda: gate.rpc_hook("ping", None, owner), n),
        "channel check": ns_per(lambda: gate.channel_refused("/p", "telegram"), n),
        "identity lookup (this process)": ns_per(lambda: identity.peer_identity(os.getpid(), service_pid=1),
                                                 max(1, n // 50)),
    }


def serve_rpc(paths: dict[str, Path], ready: Any) -> None:
    import uvloop

    async def main() -> None:
        for name, path in paths.items():
            rpc = RpcServer()
            rpc.register("ping", lambda _p, _c: {"pong": True})
            rpc.register("task.list", lambda _p, _c: {"tasks": []})
            if name == "gated":
                rpc.gate = Gate(lambda _p: None, lambda: {}).rpc_hook
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(128)
            await rpc.serve(sock)
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def rtt(path: Path, method: str, n: int) -> float:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    r = s.makefile("rb")
    req = f'{{"jsonrpc":"2.0","method":"{method}","id":1}}\n'.encode()
    for _ in range(200):
        s.sendall(req)
        r.readline()
    t0 = time.perf_counter()
    for _ in range(n):
        s.sendall(req)
        r.readline()
    dt = (time.perf_counter() - t0) / n
    s.close()
    return dt


def per_connection(path: Path, method: str, n: int) -> float:
    req = f'{{"jsonrpc":"2.0","method":"{method}","id":1}}\n'.encode()
    t0 = time.perf_counter()
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        s.sendall(req)
        s.makefile("rb").readline()
        s.close()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=2000)
    args = ap.parse_args()
    client_checks(args)
    print()
    print("policy gate (service side)")
    identity.load_key(tempfile.mkdtemp())
    for name, v in micro(max(1000, args.n * 5)).items():
        print(f"{name:<36} {v:8.0f} ns")
    d = Path(tempfile.mkdtemp())
    paths = {"plain": d / "plain.sock", "gated": d / "gated.sock"}
    # the servers in their own process (as the service is): a thread would share our GIL and blur the figures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=serve_rpc, args=(paths, ready), daemon=True)
    server.start()
    ready.wait(10)
    rounds = 15
    res: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):  # alternate (and swap who goes first), so machine load hits both alike
        for name in ("plain", "gated") if r % 2 == 0 else ("gated", "plain"):
            for method in ("ping", "task.list"):
                res.setdefault((name, method), []).append(rtt(paths[name], method, args.n // rounds))
            res.setdefault((name, "connect"), []).append(per_connection(paths[name], "task.list",
                                                                        args.conns // rounds))
    med = {k: min(v) for k, v in res.items()}  # the least disturbed batch of each (the machine is shared)
    ping = med[("plain", "ping")]
    print(f"{'ping round trip, no gate':<36} {ping * 1e6:8.1f} us")
    for what, label in (("task.list", "RPC call, persistent connection"), ("connect", "new connection + call")):
        plain, gated = med[("plain", what)], med[("gated", what)]
        extra = gated - plain
        print(f"{label:<36} {plain * 1e6:8.1f} us plain, {gated * 1e6:8.1f} us gated: "
              f"+{extra * 1e6:6.2f} us = {100 * extra / ping:5.1f}% of a ping")
    gping = med[("gated", "ping")]
    print(f"{'ping through the gate':<36} {gping * 1e6:8.1f} us ({100 * (gping - ping) / ping:+.1f}%)")
    server.kill()


if __name__ == "__main__":
    main()
