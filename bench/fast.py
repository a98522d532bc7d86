#!/usr/bin/env python3
"""Issue #24's figures, each against a floor measured in the same run on the same interpreter (no
assertions: the ratios are printed, and the README's performance table shows them).

1. Cold start to the first answered ping: ``aiwg-service run`` in the foreground, and socket-activated
   (``systemd-socket-activate``: the first connect starts it), against a 20-line asyncio Unix-socket server
   started the same ways.  Target: <= 2x.
2. ``task.submit`` to the agent's exec, p50 and p99 (the agent is ``date +%s.%N``: it prints when it ran),
   against ``asyncio.create_subprocess_exec`` of the same agent from this warm process.  Target: <= 1.5x.
3. Trivial tasks/s at concurrency 8 (``true``), against the same agent run in a loop, 8 at a time, from one
   process.  Target: >= 0.5x and >= 200/s.
4. Another client's ping p99 while one submits 1,000 tasks/s, against quiet ping p99.  Target: <= 5 ms over.
5. RSS after start with the default config, against a bare interpreter with the service's core imported.
   Target: <= 35 MB.

Run:  PYTHONPATH=. .venv/bin/python bench/fast.py [--rounds N] [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiwg_service.client import Client  # noqa: E402

FLOOR_SERVER = r'''
import asyncio, json, os, socket, sys
async def handle(r, w):
    while line := await r.readline():
        req = json.loads(line)
        w.write(json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "result": {"pong": True}}).encode() + b"\n")
        await w.drain()
    w.close()
async def main():
    if os.environ.get("LISTEN_FDS"):
        srv = await asyncio.start_unix_server(handle, sock=socket.socket(fileno=3))
    else:
        srv = await asyncio.start_unix_server(handle, path=sys.argv[1])
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
'''


FLOODER = r'''
import sys, threading, time
from aiwg_service.client import Client
sock, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
sent = [0]
t0 = time.perf_counter()

def worker():  # 8 connections: each answer waits for its fsync, which the service shares among them
    with Client(sock, 60) as c:
        while (now := time.perf_counter()) - t0 < seconds:
            with lock:
                go = sent[0] < int((now - t0) * rate)
                if go:
                    sent[0] += 1
            if go:
                c.call("task.submit", {"prompt": "x", "agent": "t"})
            else:
                time.sleep(0.0005)

threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sent[0])
'''


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def ping_once(path: Path, timeout: float = 10.0) -> bool:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(str(path))
    except OSError:
        return False
    try:
        s.sendall(b'{"jsonrpc":"2.0","method":"ping","id":1}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return False
            buf += chunk
        return b"pong" in buf
    except OSError:
        return False
    finally:
        s.close()


class Env:
    """A private XDG tree for one service, and its environment."""

    def __init__(self, tmp: Path, daemon: dict | None = None, agents: dict | None = None) -> None:
        self.tmp = tmp
        (tmp / "run").mkdir(mode=0o700, exist_ok=True)
        (tmp / "project").mkdir(exist_ok=True)
        cfg = tmp / "config" / "aiwg" / "daemon.json"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        if daemon is not None or agents is not None:
            cfg.write_text(json.dumps({"daemon": daemon or {}, "agents": agents or {}}))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "AIWG_", "INVOCATION_ID", "JOURNAL_STREAM"))}
        self.env.update(XDG_RUNTIME_DIR=str(tmp / "run"), XDG_STATE_HOME=str(tmp / "state"),
                        XDG_CONFIG_HOME=str(tmp / "config"), PYTHONPATH=str(REPO))
        self.sock = tmp / "run" / "aiwg" / "daemon.sock"
        self.cmd = [sys.executable, "-c", "from aiwg_service.main import main; main()", "run",
                    "--project", str(tmp / "project"), "--log-level", "warning"]

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while not ping_once(self.sock, 2.0):
            if time.monotonic() > end or proc.poll() is not None:
                raise SystemExit("the service did not start")
            time.sleep(0.005)
        with Client(self.sock, 30) as c:  # ready = every subsystem started
            while c.call("daemon.status").get("starting"):
                time.sleep(0.01)
        return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- 1. cold start ------------------------------------------------------------------------------------------
def cold_start(rounds: int) -> dict[str, float]:
    """Median seconds from spawn to the first answered ping, interleaved rounds."""
    act = shutil.which("systemd-socket-activate")
    res: dict[str, list[float]] = {"floor": [], "service": [], "floor-activated": [], "service-activated": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            env = Env(tmp)
            floor_sock = tmp / "floor.sock"
            for name, cmd, path in (("floor", [sys.executable, "-c", FLOOR_SERVER, str(floor_sock)], floor_sock),
                                    ("service", env.cmd, env.sock)):
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd, env=env.env, cwd=tmp, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                while not ping_once(path, 5.0):
                    if proc.poll() is not None:
                        raise SystemExit(f"{name} exited")
                    time.sleep(0.001)
                res[name].append(time.perf_counter() - t0)
                stop(proc)
                with __import__("contextlib").suppress(FileNotFoundError):
                    path.unlink()
            if act is None:
                continue
            (tmp / "run" / "aiwg").mkdir(mode=0o700, exist_ok=True)
            for name, cmd, path in (("floor-activated", [sys.executable, "-c", FLOOR_SERVER], tmp / "fa.sock"),
                                    ("service-activated", env.cmd, env.sock)):
                with __import__("contextlib").suppress(FileNotFoundError):
                    path.unlink()
                setenv = [f"-E{k}={v}" for k, v in env.env.items() if k.startswith(("XDG_", "PYTHON", "PATH"))]
                proc = subprocess.Popen([act, "-l", str(path), *setenv, *cmd], env=env.env, cwd=tmp,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                listening = socket.socket(socket.AF_UNIX)
                while listening.connect_ex(str(path)) != 0:  # bound and listening (this connect waits)
                    time.sleep(0.001)
                t0 = time.perf_counter()  # the socket listens; the first connect starts the program
                listening.close()
                assert ping_once(path, 30.0), f"{name}: no answer"
                res[name].append(time.perf_counter() - t0)
                stop(proc)
    return {k: statistics.median(v) for k, v in res.items() if v}


# -- 2. submit to exec ------------------------------------------------------------------------------------------
async def floor_exec(n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        t = time.time()
        p = await asyncio.create_subprocess_exec("/bin/date", "-d", "now", "+%s.%N", stdout=asyncio.subprocess.PIPE)
        data, _ = await p.communicate()
        out.append(float(data) - t)
    return out


def submit_to_exec(n: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = Env(tmp, {"max_parallel_actions": 8, "stop_timeout_seconds": 0},
                  {"date": {"kind": "command", "command": ["/bin/date", "-d", "{prompt}", "+%s.%N"]}})
        proc = env.start()
        lat: list[float] = []
        floor: list[float] = []
        try:
            with Client(env.sock, 60) as c:
                for _ in range(n):
                    floor += asyncio.run(floor_exec(1))
                    t = time.time()
                    tid = c.call("task.submit", {"prompt": "now", "agent": "date"})["taskId"]
                    while (got := c.call("task.get", {"taskId": tid}))["state"] in ("queued", "running"):
                        time.sleep(0.002)
                    lat.append(float(Path(got["log_path"]).read_text().split()[0]) - t)
        finally:
            stop(proc)
    return lat, floor


# -- 3. tasks/s ----------------------------------------------------------------------------------------------------
async def floor_loop(n: int, parallel: int) -> float:
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            p = await asyncio.create_subprocess_exec("/bin/true")
            await p.wait()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


def tasks_per_second(n: int, parallel: int = 8) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = Env(tmp, {"max_parallel_actions": parallel, "stop_timeout_seconds": 0},
                  {"t": {"kind": "command", "command": ["/bin/true", "{prompt}"]}})
        proc = env.start()
        try:
            with Client(env.sock, 120) as sub, Client(env.sock, 120) as c:
                sub.call("events.subscribe", {"type": "task.completed"})
                t0 = time.perf_counter()
                for _ in range(n):
                    c.call("task.submit", {"prompt": "x", "agent": "t"})
                done = 0
                while done < n:
                    if sub.read().get("method") == "events.event":
                        done += 1
                rate = n / (time.perf_counter() - t0)
        finally:
            stop(proc)
    return rate, asyncio.run(floor_loop(n, parallel))


# -- 4. ping under a submit flood -----------------------------------------------------------------------------
def ping_under_flood(seconds: float = 2.0, rate: float = 1000.0) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = Env(tmp, {"max_parallel_actions": 2, "stop_timeout_seconds": 0},
                  {"t": {"kind": "command", "command": ["/bin/true", "{prompt}"]}})
        proc = env.start()
        try:
            def pings(until: float) -> list[float]:
                out = []
                with Client(env.sock, 30) as c:
                    while time.perf_counter() < until:
                        a = time.perf_counter()
                        c.call("ping")
                        out.append(time.perf_counter() - a)
                        time.sleep(0.005)
                return out

            quiet = pings(time.perf_counter() + seconds)
            # the flood from another process: threads of this one would share its GIL with the pinger
            flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(env.sock), str(seconds), str(rate)],
                                       stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
            busy = pings(time.perf_counter() + seconds)
            out, _ = flooder.communicate(timeout=120)
            achieved = int(out.split()[0]) / seconds
        finally:
            stop(proc)
    return pct(quiet, 99), pct(busy, 99), achieved


# -- 5. RSS --------------------------------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        env = Env(Path(d))
        proc = env.start()
        try:
            time.sleep(0.5)
            service = rss_kb(proc.pid) / 1024
        finally:
            stop(proc)
    core = subprocess.Popen([sys.executable, "-c", "import aiwg_service.service, sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    time.sleep(1.5)
    floor = rss_kb(core.pid) / 1024
    core.communicate(b"")
    return service, floor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--execs", type=int, default=40)
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    c = cold_start(a.rounds)
    print(f"cold start to first ping, foreground: {c['service'] * 1e3:.0f} ms vs floor {c['floor'] * 1e3:.0f} ms "
          f"= {c['service'] / c['floor']:.2f}x (target <= 2x)")
    if "service-activated" in c:
        print(f"cold start to first ping, socket-activated: {c['service-activated'] * 1e3:.0f} ms vs floor "
              f"{c['floor-activated'] * 1e3:.0f} ms = {c['service-activated'] / c['floor-activated']:.2f}x")
    lat, floor = submit_to_exec(a.execs)
    for label, q in (("p50", 50), ("p99", 99)):
        print(f"submit to agent exec {label}: {pct(lat, q) * 1e3:.1f} ms vs create_subprocess_exec "
              f"{pct(floor, q) * 1e3:.1f} ms = {pct(lat, q) / pct(floor, q):.1f}x (target <= 1.5x)")
    rate, floor_rate = tasks_per_second(a.tasks)
    print(f"trivial tasks/s at concurrency 8: {rate:.0f}/s vs a loop in one process {floor_rate:.0f}/s "
          f"= {rate / floor_rate:.2f}x (target >= 0.5x and >= 200/s)")
    q99, b99, achieved = ping_under_flood()
    print(f"ping p99 while another client submits {achieved:.0f} tasks/s: {b99 * 1e3:.1f} ms vs quiet "
          f"{q99 * 1e3:.1f} ms = +{(b99 - q99) * 1e3:.1f} ms (target <= 5 ms)")
    svc, core = rss()
    print(f"RSS after start, default config: {svc:.1f} MB vs the core imported {core:.1f} MB "
          f"= {svc / core:.2f}x (target <= 35 MB)")


if __name__ == "__main__":
    main()
