#!/usr/bin/env python3
"""Webhook listener benchmark: signed deliveries per second on one core, and time to the 202.

The real service (``aiwg-service run``) serves a GitHub hook with 1,000 rules loaded on its project (990 that
do not match a push: other hooks' events, file globs, task.failed; 10 on ``webhook.github`` push with a cheap
``emit`` action, so every delivery also runs rules). It is pinned to one CPU; the load generator (a raw
keep-alive HTTP/1.1 client on uvloop, requests prepared up front) to the other. Every request carries a
valid HMAC-SHA256 signature and a new delivery id, so each one is verified, de-duplicated in SQLite and
published. The floor is a bare aiohttp server on the same core answering 202 to the same requests without
any checks: the ratio says what verification, de-dup, limits and publishing cost on top of aiohttp itself.

1. Throughput: N deliveries over C keep-alive connections.
2. Time to the 202: one request at a time (the sender's view: request written -> status line read).
Usage: PYTHONPATH=. python bench/webhooks.py [--requests 20000] [--concurrency 16] [--samples 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + uuid.uuid4().hex
BODY = json.dumps({"ref": "refs/heads/main", "after": "0" * 40, "commits": [{"id": "1" * 40, "message": "x"}] * 3,
                   "repository": {"full_name": "me/repo"}}).encode()
SIG = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
FLOOR = textwrap.dedent("""
    import sys, uvloop
    from aiohttp import web
    async def handle(request):
        await request.read()
        return web.Response(status=202, body=b'{"accepted":true}', content_type="application/json")
    app = web.Application()
    app.router.add_post("/hooks/{id}", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int) -> bytes:
    head = (f"POST /hooks/gh HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"User-Agent: GitHub-Hookshot/bench\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n"
            f"X-Hub-Signature-256: {SIG}\r\nContent-Length: {len(BODY)}\r\n\r\n")
    return head.encode() + BODY


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def worker(port: int, reqs: list[bytes], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for r in reqs:
        writer.write(r)
        st = await read_response(reader)
        statuses[st] = statuses.get(st, 0) + 1
    writer.close()


async def throughput(port: int, n: int, conc: int) -> tuple[float, dict[int, int]]:
    reqs = [request(port) for _ in range(n)]
    statuses: dict[int, int] = {}
    # warm up (connections, caches) before timing
    await asyncio.gather(*(worker(port, [request(port) for _ in range(50)], {}) for _ in range(conc)))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(port, reqs[i::conc], statuses) for i in range(conc)))
    return n / (time.perf_counter() - t0), statuses


async def latency(port: int, samples: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reqs = [request(port) for _ in range(samples + 100)]
    out = []
    for i, r in enumerate(reqs):
        t0 = time.perf_counter()
        writer.write(r)
        st = await read_response(reader)
        dt = (time.perf_counter() - t0) * 1000
        assert st == 202, st
        if i >= 100:
            out.append(dt)
        await asyncio.sleep(0.001)  # the idle sender's pace: each delivery meets a quiet service
    writer.close()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}:\n{log.read_text()[-2000:]}")


def rules(acting: int) -> list[dict]:
    out: list[dict] = []
    for i in range(330):
        out.append({"id": f"release-{i}", "triggers": [{"type": "webhook.github", "data": {"event": f"release{i}"}}],
                    "actions": [{"emit": {"type": "bench.never"}}]})
    for i in range(330):
        out.append({"id": f"other-{i}", "triggers": [{"type": f"webhook.other{i}"}], "actions": [{"shell": "true"}]})
    for i in range(330):
        out.append({"id": f"py-{i}", "triggers": [{"type": "file.modify", "paths": [f"pkg{i}/**/*.py"]}],
                    "actions": [{"agent": {"prompt": "fix {path}"}}]})
    for i in range(10 - acting):
        out.append({"id": f"tag-{i}", "triggers": [{"type": "webhook.gitlab"}], "actions": [{"shell": "true"}]})
    for i in range(acting):
        out.append({"id": f"push-{i}", "triggers": [{"type": "webhook.github", "data": {"event": "push"}}],
                    "actions": [{"emit": {"type": "bench.pushed", "data": {"n": i}}}], "mode": "parallel",
                    "max_runs_per_minute": 100000})
    return out


def run_service(tmp: Path, port: int, cpu: int, acting: int) -> tuple[subprocess.Popen[bytes], Path]:
    project = tmp / "project"
    (project / ".aiwg").mkdir(parents=True)
    (project / ".aiwg" / "daemon.json").write_text(json.dumps({
        "watch": {"paths": []}, "schedule": {"jobs": []}, "rules": rules(acting),
        "webhook": {"hooks": [{"id": "gh", "kind": "github", "secret_env": "BENCH_SECRET"}]}}))
    (tmp / "config" / "aiwg").mkdir(parents=True)
    big = 1_000_000
    (tmp / "config" / "aiwg" / "daemon.json").write_text(json.dumps({"webhook": {"port": port, "rate_limit": {
        "per_hook_per_second": big, "per_hook_burst": big, "per_source_per_second": big, "per_source_burst": big}},
        "daemon": {"log": {"level": "warning"}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "AIWG_"))}
    env.update(XDG_RUNTIME_DIR=str(tmp / "run"), XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "config"),
               BENCH_SECRET=SECRET, PYTHONPATH=str(REPO))
    (tmp / "run").mkdir(mode=0o700)
    log = tmp / "service.log"
    exe = shutil.which("aiwg-service", path=str(Path(sys.executable).parent)) or "aiwg-service"
    with open(log, "wb") as f:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), exe, "run", "--project", str(project),
                                 "--log-level", "warning"], env=env, stdout=f, stderr=f, cwd=tmp)
    return proc, log


def run_floor(tmp: Path, port: int, cpu: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / "floor.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", FLOOR, str(port)], stdout=f,
                                stderr=f)
    return proc, log


def measure(name: str, port: int, n: int, conc: int, samples: int) -> dict[str, float]:
    import uvloop

    rate, statuses = uvloop.run(throughput(port, n, conc))
    lat = uvloop.run(latency(port, samples))
    res = {"rate": rate, "p50": pct(lat, 0.50), "p99": pct(lat, 0.99), "max": max(lat)}
    print(f"{name:<28} {rate:>9,.0f}/s   p50 {res['p50']:.2f} ms   p99 {res['p99']:.2f} ms   "
          f"max {res['max']:.2f} ms   statuses {statuses}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--acting", type=int, default=1, help="rules (of the 1,000) that a push runs (0-10)")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    os.sched_setaffinity(0, {client_cpu})
    print(f"server on CPU {server_cpu}, client on CPU {client_cpu} ({os.cpu_count()} CPUs, shared with whatever "
          f"else runs); {args.requests:,} signed deliveries over {args.concurrency} connections, then "
          f"{args.samples:,} one at a time")
    with tempfile.TemporaryDirectory(prefix="aiwg-bench-wh-") as d:
        tmp = Path(d)
        fport = free_port()
        floor, flog = run_floor(tmp, fport, server_cpu)
        try:
            wait_port(fport, floor, flog)
            base = measure("bare aiohttp (floor)", fport, args.requests, args.concurrency, args.samples)
        finally:
            floor.terminate()
            floor.wait(10)
        port = free_port()
        svc, log = run_service(tmp, port, server_cpu, args.acting)
        try:
            wait_port(port, svc, log)
            ours = measure(f"aiwg-service, 1,000 rules, {args.acting} run", port, args.requests, args.concurrency,
                           args.samples)
        finally:
            svc.terminate()
            svc.wait(30)
        if "Traceback" in log.read_text():
            print(log.read_text()[-3000:])
    print(f"ratio vs floor: throughput {ours['rate'] / base['rate']:.2f}x, p99 {ours['p99'] / base['p99']:.2f}x")
    print(f"targets: >= 2,000/s: {'met' if ours['rate'] >= 2000 else 'NOT met'} ({ours['rate']:,.0f}/s); "
          f"p99 < 5 ms: {'met' if ours['p99'] < 5 else 'NOT met'} ({ours['p99']:.2f} ms)")


if __name__ == "__main__":
    main()
