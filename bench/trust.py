"""What the client's trust checks cost per connection, against a bare connect on the same socket.

    python bench/trust.py [--n 20000]

Listens on a Unix socket in a private temp directory (a thread accepts and closes), then times:

  * floor:   ``_socket`` connect + close (what any client pays);
  * checked: the same, plus the socket-directory check (stat) and the SO_PEERCRED uid check, as
             ``aiwg_service.client.Client`` does on every connection;
  * each check alone.

Prints microseconds per connection and the ratio to the floor. ``aiwgctl ping`` as a whole (a process
start) is measured by ``bench/cli.py``.
"""

from __future__ import annotations

import _socket
import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.client import check_socket_dir, peer_uid


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
