#!/usr/bin/env python3
"""RPC benchmark: sequential ping round trips, 32 concurrent clients, and `aiwgctl status` wall time.

Starts a foreground service with private XDG directories, measures with plain blocking Python socket
clients (as the AIWG daemon was measured), prints the figures, and stops the service.
Usage: python bench/rpc.py [--n 20000] [--clients 32]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def connect(path: Path) -> tuple[socket.socket, object]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    return s, s.makefile("rb")


def sequential(path: Path, n: int) -> tuple[list[float], float]:
    s, r = connect(path)
    req = b'{"jsonrpc":"2.0","method":"ping","id":1}\n'
    for _ in range(500):  # warm-up
        s.sendall(req)
        r.readline()  # type: ignore[attr-defined]
    lat: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        a = time.perf_counter()
        s.sendall(req)
        r.readline()  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - a)
    total = time.perf_counter() - t0
    s.close()
    return lat, n / total


def concurrent(path: Path, clients: int, per_client: int) -> tuple[list[float], float]:
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        s, r = connect(path)
        req = b'{"jsonrpc":"2.0","method":"ping","id":1}\n'
        mine: list[float] = []
        barrier.wait()
        for _ in range(per_client):
            a = time.perf_counter()
            s.sendall(req)
            r.readline()  # type: ignore[attr-defined]
            mine.append(time.perf_counter() - a)
        s.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return lat, clients * per_client / (time.perf_counter() - t0)


FLOOR_SERVER = """
import asyncio, sys, uvloop
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(b'{"jsonrpc":"2.0","id":1,"result":{"pong":true}}\\n')
async def main():
    await asyncio.get_running_loop().create_unix_server(P, sys.argv[1])
    print("ready", flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""


def floor(tmp: Path, n: int) -> None:
    """The same client against a bare uvloop server that answers every line: the machine's floor."""
    path = tmp / "floor.sock"
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        lat, rps = sequential(path, n)
        print(f"floor (bare uvloop server, no JSON-RPC): {rps:,.0f} req/s, "
              f"p50 {pct(lat, .5) * 1e6:.1f} us, p99 {pct(lat, .99) * 1e6:.1f} us")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "run").mkdir(mode=0o700)
        (t / "proj").mkdir()
        env = {**os.environ, "XDG_RUNTIME_DIR": str(t / "run"), "XDG_STATE_HOME": str(t / "state"),
               "XDG_CONFIG_HOME": str(t / "config")}
        env.pop("AIWG_SOCKET", None)
        sock = t / "run" / "aiwg" / "daemon.sock"
        proc = subprocess.Popen([str(BIN / "aiwg-service"), "run", "--project", str(t / "proj"),
                                 "--log-level", "warning"], env=env)
        try:
            deadline = time.monotonic() + 15
            while not sock.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the service did not start")
                time.sleep(0.02)
            time.sleep(0.2)
            floor(t, args.n)
            lat, rps = sequential(sock, args.n)
            print(f"sequential ping, 1 connection, {args.n} requests: {rps:,.0f} req/s, "
                  f"p50 {pct(lat, .5) * 1e6:.1f} us, p99 {pct(lat, .99) * 1e6:.1f} us")
            lat, rps = concurrent(sock, args.clients, max(200, args.n // args.clients))
            print(f"{args.clients} concurrent clients: {rps:,.0f} req/s total, "
                  f"p50 {pct(lat, .5) * 1e6:.1f} us, p99 {pct(lat, .99) * 1e6:.1f} us")
            walls = []
            for _ in range(15):
                a = time.perf_counter()
                subprocess.run([str(BIN / "aiwgctl"), "status"], env=env, cwd=t / "proj",
                               stdout=subprocess.DEVNULL, check=True)
                walls.append(time.perf_counter() - a)
            print(f"aiwgctl status wall time: median {statistics.median(walls) * 1e3:.1f} ms, "
                  f"min {min(walls) * 1e3:.1f} ms, max {max(walls) * 1e3:.1f} ms (15 runs)")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
