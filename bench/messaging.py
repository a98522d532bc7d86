#!/usr/bin/env python3
"""Messaging benchmark: one inbound chat command to its reply, and what an idle hub costs.

1. Latency: the local Telegram Bot API fake (tests/fake_telegram.py) holds the long poll; each sample pushes
   one ``/help`` and times, inside the fake, from the update being queued to the ``sendMessage`` carrying the
   answer. Measured for the real service (subprocess: long poll -> inbox write -> auth -> rate limit -> command
   -> format -> sendMessage), and for the floor: a bare aiohttp client in this process that long-polls and
   answers at once, with no service at all. Service overhead = service p50 - floor p50 (target < 20 ms).
2. Outbox drain after an outage: the fake's port goes away, N notifications are sent (they wait in the
   bridge's outbox), the port comes back; from its return to the first message delivered (the bridge's
   reconnect, target < 2 s) and to the last (the drain rate, messages/s), beside the floor: the same N
   sendMessage calls made back to back by a bare aiohttp client.
3. Idle: with the hub connected and nothing happening, getUpdates calls and the service's CPU time over a
   window, with a 50 s poll timeout (Telegram's own long poll is the only wake-up; the outbox's courier
   sleeps on an event, no timer).
Usage: PYTHONPATH=. python bench/messaging.py [--samples 300] [--idle 20] [--outbox 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fake_telegram import FakeTelegram  # noqa: E402
from service_fixture import ServiceEnv, wait_for  # noqa: E402

TOKEN = "123456:TEST-token"
USER = 42


class TimedTelegram(FakeTelegram):
    """The fake, stamping each pushed update and each sendMessage with perf_counter()."""

    def __init__(self) -> None:
        super().__init__(TOKEN)
        self.pushed_at: dict[int, float] = {}
        self.replied_at: list[float] = []

    def push(self, update: dict) -> int:
        t = time.perf_counter()
        uid = super().push(update)
        self.pushed_at[uid] = t
        return uid

    async def m_sendMessage(self, params: dict):  # type: ignore[override]
        self.replied_at.append(time.perf_counter())
        return await super().m_sendMessage(params)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_samples(tg: TimedTelegram, n: int) -> list[float]:
    out = []
    for _ in range(n):
        before = len(tg.replied_at)
        uid = tg.push_message(USER, "/help")
        tg.wait(lambda b=before: len(tg.replied_at) > b, 10, what="a reply")
        out.append((tg.replied_at[before] - tg.pushed_at[uid]) * 1000)
    return out


def floor_client(base: str, stop: threading.Event) -> threading.Thread:
    """The least any bot can do: long-poll, and answer each update at once."""

    async def main() -> None:
        offset = None
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                payload = {"timeout": 1, **({"offset": offset} if offset else {})}
                async with s.post(f"{base}/bot{TOKEN}/getUpdates", json=payload) as r:
                    updates = (await r.json())["result"]
                for u in updates:
                    offset = u["update_id"] + 1
                    await (await s.post(f"{base}/bot{TOKEN}/sendMessage",
                                        json={"chat_id": u["message"]["chat"]["id"], "text": "help"})).read()

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    return t


def floor_sends(base: str, n: int) -> float:
    """Seconds a bare client takes for ``n`` sendMessage calls in a row (one connection, in order)."""

    async def main() -> float:
        async with aiohttp.ClientSession() as s:
            t0 = time.perf_counter()
            for i in range(n):
                await (await s.post(f"{base}/bot{TOKEN}/sendMessage", json={"chat_id": 777, "text": f"m{i}"})).read()
            return time.perf_counter() - t0

    return asyncio.run(main())


def outbox_drain(env: ServiceEnv, tg: TimedTelegram, n: int) -> tuple[float, float]:
    """(seconds from the fake's return to the first delivery, to the last) for ``n`` waiting messages."""
    tg.down()
    for i in range(n):
        env.call("messaging.notify", {"message": f"queued {i}"})
    wait_for(lambda: env.call("messaging.status")["bridges"]["telegram"]["outbox"]["queued"] == n, 60)
    before = len(tg.replied_at)
    t_up = time.perf_counter()
    tg.up()
    tg.wait(lambda: len(tg.replied_at) >= before + n, 120, what="the outbox drained")
    texts = [t for t in tg.texts(777) if "queued " in t]
    assert [int(t.rsplit(" ", 1)[1]) for t in texts] == list(range(n)), "out of order or duplicated"
    return tg.replied_at[before] - t_up, tg.replied_at[before + n - 1] - t_up


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--outbox", type=int, default=200)
    args = ap.parse_args()

    with TimedTelegram() as tg:
        stop = threading.Event()
        floor_client(tg.base, stop)
        run_samples(tg, 20)  # warm-up
        floor = run_samples(tg, args.samples)
        stop.set()
        time.sleep(1.5)
        floor_drain = floor_sends(tg.base, args.outbox)

    with tempfile.TemporaryDirectory() as tmp, TimedTelegram() as tg:
        env = ServiceEnv(Path(tmp))
        env.env.update(AIWG_TELEGRAM_TOKEN=TOKEN, AIWG_TELEGRAM_CHAT_ID="777")
        cfg = env.config_home / "aiwg" / "daemon.json"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(json.dumps({"messaging": {
            "users": {f"telegram:{USER}": "write"}, "rate_limit": {"commands": 10_000, "per_seconds": 60},
            "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 50},
            "slack": {"enabled": False}, "discord": {"enabled": False}, "apprise": {"enabled": False}}}))
        env.start()
        try:
            wait_for(lambda: env.call("messaging.status")["bridges"]["telegram"]["state"] == "connected", 20)
            run_samples(tg, 20)  # warm-up
            service = run_samples(tg, args.samples)
            first, last = outbox_drain(env, tg, args.outbox)
            wait_for(lambda: env.call("messaging.status")["bridges"]["telegram"]["outbox"]["queued"] == 0, 20)
            time.sleep(1.0)  # the last acknowledgements settle before the idle window
            assert env.proc is not None
            polls, cpu0 = tg.polls, cpu_seconds(env.proc.pid)
            time.sleep(args.idle)
            idle_polls, idle_cpu = tg.polls - polls, cpu_seconds(env.proc.pid) - cpu0
        except BaseException:
            print(env.log_text()[-3000:], file=sys.stderr)
            raise
        finally:
            env.stop()

    fp50, sp50 = statistics.median(floor), statistics.median(service)
    print(f"inbound /help -> reply over the Telegram Bot API fake, {args.samples} samples (ms)")
    print(f"  floor (bare long-poll client): p50 {fp50:6.2f}  p90 {pct(floor, .9):6.2f}  p99 {pct(floor, .99):6.2f}")
    print(f"  aiwg-service:                  p50 {sp50:6.2f}  p90 {pct(service, .9):6.2f}  "
          f"p99 {pct(service, .99):6.2f}")
    print(f"  service overhead p50: {sp50 - fp50:.2f} ms (target < 20 ms); service/floor ratio {sp50 / fp50:.2f}x")
    rate, floor_rate = args.outbox / last, args.outbox / floor_drain
    print(f"outbox after an outage, {args.outbox} messages waiting: first delivered {first * 1000:.0f} ms after the "
          f"server's return (target < 2000 ms), all in {last:.2f} s: {rate:.0f} msg/s; a bare client sends them at "
          f"{floor_rate:.0f} msg/s (ratio {rate / floor_rate:.2f}x)")
    print(f"idle {args.idle:g} s with a 50 s long poll: {idle_polls} getUpdates call(s), "
          f"{idle_cpu * 1000:.0f} ms CPU in the service")


if __name__ == "__main__":
    main()
