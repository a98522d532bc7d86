#!/usr/bin/env python3
"""Chat figures (no assertions).

1. The service's overhead per chat turn with the fake claude, through a real ``aiwg-service`` over its socket,
   every turn resuming the conversation's session:
   - submit -> first output byte: from sending ``chat.send`` to the agent's first write (its ``mark`` line),
     minus the same agent spawned bare (spawn -> its first write): what the service adds (RPC, two SQLite
     commits, the scheduler, the session lookup, the spawn wrapper);
   - last byte -> ``task.completed``: from the agent's last write to the client receiving ``task.completed``
     on an ``events.subscribe`` connection, minus the bare agent's last write -> exit seen by its parent.
   Target: p50 under 10 ms each.
2. ``aiwgctl top`` while nothing happens: CPU ticks used in 5 s (target 0: it sleeps on events).

Run:  .venv/bin/python bench/chat.py [--turns N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "fake_claude.py"
BIN = Path(sys.executable).parent


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def marks(path: Path) -> list[tuple[str, float]]:
    out = []
    for line in path.read_text().splitlines():
        kind, _pid, t = line.split()
        out.append((kind, float(t)))
    return out


class Conn:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.f = self.sock.makefile("rb")
        self.n = 0

    def send(self, method: str, params: dict) -> int:
        self.n += 1
        self.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}).encode()
                          + b"\n")
        return self.n

    def call(self, method: str, params: dict) -> dict:
        rid = self.send(method, params)
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("id") == rid:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def next_event(self) -> dict:
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("method") == "events.event":
                return msg["params"]


def bare_turn(mark: Path, cwd: Path, env: dict[str, str], session: list[str]) -> tuple[float, float]:
    """The fake agent spawned directly with the same session flags: spawn -> first write, last write -> exit."""
    t0 = time.time()
    p = subprocess.Popen(["claude", "-p", f"bare mark={mark}", "--output-format", "stream-json", "--verbose",
                          *session], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    p.communicate()
    t_exit = time.time()
    m = dict(marks(mark))
    return m["start"] - t0, t_exit - m["end"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=40)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiwg-bench-chat-"))
    (tmp / "run").mkdir(mode=0o700)
    project = tmp / "project"
    project.mkdir()
    fakebin = tmp / "bin"
    fakebin.mkdir()
    (fakebin / "claude").symlink_to(FAKE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "AIWG_", "INVOCATION"))}
    env.update(XDG_RUNTIME_DIR=str(tmp / "run"), XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "cfg"),
               HOME=str(tmp / "home"), PATH=f"{fakebin}:{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
               PYTHONPATH=str(ROOT))
    log = open(tmp / "service.log", "wb")  # noqa: SIM115
    svc = subprocess.Popen([str(BIN / "aiwg-service"), "run", "--project", str(project)], env=env, cwd=tmp,
                           stdout=log, stderr=log)
    sock = tmp / "run" / "aiwg" / "daemon.sock"
    try:
        for _ in range(300):
            if sock.exists():
                try:
                    Conn(sock).call("ping", {})
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        events = Conn(sock)
        events.call("events.subscribe", {"type": "task.completed"})
        c = Conn(sock)
        conv = None
        first, last, b_first, b_last = [], [], [], []
        bare_session = ["--session-id", "00000000-0000-4000-8000-000000000000"]
        for i in range(args.turns + 3):
            mark = tmp / f"turn-{i}"
            t0 = time.time()
            res = c.call("chat.send", {"message": f"turn {i} mark={mark}", "conversation": conv})
            conv = res["conversation"]
            while True:
                ev = events.next_event()
                if ev["data"].get("id") == res["taskId"]:
                    t_done = time.time()
                    break
            if i < 3:
                continue  # warm-up
            m = dict(marks(mark))
            first.append(m["start"] - t0)
            last.append(t_done - m["end"])
            # the floor, measured turn by turn under the same load: the same agent, same flags, spawned bare
            bf, bl = bare_turn(tmp / f"bare-{i}", project, env, bare_session)
            bare_session = ["--resume", bare_session[1]]
            b_first.append(bf)
            b_last.append(bl)
        hist = c.call("chat.history", {"conversation": conv})
        assert all(t["state"] == "completed" for t in hist["turns"]), "a turn failed"

        def show(name: str, svc_xs: list[float], bare: list[float]) -> None:
            floor = statistics.median(bare)
            over = [x - b for x, b in zip(svc_xs, bare, strict=True)]
            print(f"{name}: service p50 {statistics.median(svc_xs) * 1000:.2f} ms, bare agent p50 "
                  f"{floor * 1000:.2f} ms -> overhead p50 {statistics.median(over) * 1000:.2f} ms, "
                  f"p95 {pct(over, 95) * 1000:.2f} ms (target p50 < 10 ms; ratio to the bare agent "
                  f"{statistics.median(svc_xs) / floor:.2f}x)")

        print(f"{args.turns} chat turns of one conversation (each resumes its session), fake claude")
        show("submit -> first output byte", first, b_first)
        show("last byte -> task.completed", last, b_last)

        top = subprocess.Popen([str(BIN / "aiwgctl"), "top"], env={**env, "AIWG_SOCKET": str(sock)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # its first draw

        def ticks() -> int:
            f = Path(f"/proc/{top.pid}/stat").read_text()
            parts = f[f.rfind(")") + 2:].split()
            return int(parts[11]) + int(parts[12])

        before = ticks()
        time.sleep(5.0)
        idle = ticks() - before
        hz = os.sysconf("SC_CLK_TCK")
        print(f"aiwgctl top idle: {idle} CPU ticks in 5 s ({idle / hz * 1000:.0f} ms; target 0: it sleeps on events)")
        top.send_signal(signal.SIGTERM)
        top.wait(5)
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(20)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
