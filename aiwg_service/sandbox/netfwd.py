"""Serves the task's filtering proxy inside the agent's network namespace.

Run as ``python -I -S netfwd.py HOST:PORT UNIX_SOCKET -- AGENT ARGV...`` (stdlib only, nothing of the
package): listens on ``HOST:PORT`` (loopback, inside the namespace), relays each connection to the proxy's
Unix socket (bound in from outside, where the proxy filters by host name and logs refusals), runs the agent
as its child and exits with the agent's status.  With a private network namespace this is the agent's only
way out, whatever the agent does with its environment.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:  # noqa: SIM105 - no contextlib: start-up time
                s.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, target: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(target)
        except OSError:
            conn.close()
            up.close()
            continue
        threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=_pump, args=(up, conn), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: netfwd.py HOST:PORT UNIX_SOCKET -- ARGV...\n")
        return 2
    host, _, port = argv[0].rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(64)
    pid = os.fork()
    if pid == 0:
        listener.close()
        try:
            os.execvp(argv[3], argv[3:])
        except OSError as e:
            sys.stderr.write(f"cannot start agent {argv[3]!r}: {e.strerror}\n")
        os._exit(127)
    # The runner signals the whole group: the agent gets it; we stay to relay until it is gone.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_serve, args=(listener, argv[1]), daemon=True).start()
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
