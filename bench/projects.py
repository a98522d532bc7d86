#!/usr/bin/env python3
"""Many projects, one service: a request through a project's own socket (the connection says the project)
against the same request through the service's socket, in the same run; prints the ratio.

Starts a foreground service serving two projects with private XDG directories, measures sequential round
trips of ``ping`` and of ``daemon.status`` (which a project's socket scopes to that project), and stops it.
Usage: python bench/projects.py [--n 5000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rpc import pct

BIN = Path(sys.executable).parent


def rounds(path: Path, method: bytes, n: int) -> list[float]:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    r = s.makefile("rb")
    req = b'{"jsonrpc":"2.0","method":"' + method + b'","id":1}\n'
    for _ in range(min(500, n)):
        s.sendall(req)
        r.readline()
    lat = []
    for _ in range(n):
        a = time.perf_counter()
        s.sendall(req)
        r.readline()
        lat.append(time.perf_counter() - a)
    s.close()
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "run").mkdir(mode=0o700)
        for name in ("a", "b"):
            (t / name).mkdir()
        env = {**os.environ, "XDG_RUNTIME_DIR": str(t / "run"), "XDG_STATE_HOME": str(t / "state"),
               "XDG_CONFIG_HOME": str(t / "config")}
        env.pop("AIWG_SOCKET", None)
        sock = t / "run" / "aiwg" / "daemon.sock"
        link = t / "a" / ".aiwg" / "daemon" / "daemon.sock"
        proc = subprocess.Popen([str(BIN / "aiwg-service"), "run", "--project", str(t / "a"), "--project",
                                 str(t / "b"), "--log-level", "warning"], env=env)
        try:
            deadline = time.monotonic() + 30
            while not (sock.exists() and link.resolve().is_socket()):
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("the service did not start")
                time.sleep(0.05)
            time.sleep(0.5)
            for method in (b"ping", b"daemon.status"):
                whole = pct(rounds(sock, method, args.n), .5)
                scoped = pct(rounds(link, method, args.n), .5)
                print(f"{method.decode():14} p50 service socket {whole * 1e6:8.1f} us, project socket "
                      f"{scoped * 1e6:8.1f} us, ratio {scoped / whole:.2f}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
