#!/usr/bin/env python3
"""Automation engine benchmark: rule evaluation throughput and publish-to-action-start latency.

1. Throughput: 1,000 rules loaded on one project (800 path-glob rules on file.modify, 100 on file.* with globs,
   50 on task.failed, 50 on cron.fired), a stream of file.modify events over 2,000 directories (about 40% hit a
   rule, whose match condition then fails, so every hit also writes a trace). Measured twice: through the real bus
   (publish -> subscriber queue -> engine), and the engine's handler called directly.
2. Latency: publish -> bus -> engine -> task -> agent action start (the injected submit_task), one event at a time.
   This is publish-to-action-start through the bus, not file-write-to-action (that needs the inotify watcher,
   which another part owns); add the watcher's own write-to-publish latency to get the full figure.
Usage: PYTHONPATH=. python bench/rules.py [--events 50000] [--samples 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)
from aiwg_service.events.bus import EventBus
from aiwg_service.rules.engine import AutomationEngine


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def thousand_rules() -> list[dict]:
    rules: list[dict] = []
    for i in range(800):
        rules.append({"id": f"py-{i}", "triggers": [{"type": "file.modify", "paths": [f"pkg{i}/**/*.py"]}],
                      "conditions": [{"match": {"field": "data.kind", "equals": "hot"}}],
                      "actions": [{"agent": {"prompt": "fix {path}"}}], "mode": "parallel"})
    for i in range(100):
        rules.append({"id": f"md-{i}", "triggers": [{"type": "file.*", "paths": [f"docs{i}/*.md"]}],
                      "actions": [{"agent": {"prompt": "docs {path}"}}]})
    for i in range(50):
        rules.append({"id": f"tf-{i}", "triggers": [{"type": "task.failed", "agent": f"agent{i}"}],
                      "actions": [{"notify": {"message": "failed"}}]})
    for i in range(50):
        rules.append({"id": f"cr-{i}", "trigger": {"type": "cron.fired"},
                      "conditions": [{"field": "payload.job_id", "operator": "eq", "value": f"job{i}"}],
                      "action": {"type": "agent", "prompt": "cron"}})
    return rules


async def throughput(n: int, tmp: Path) -> list[float]:
    cfg = config.parse(json.dumps({"rules": thousand_rules(), "schedule": {"jobs": []}}), "bench").config
    root = str(tmp / "proj")
    rng = random.Random(1)
    paths = [f"pkg{rng.randrange(2000)}/sub/m{rng.randrange(50)}.py" for _ in range(n)]
    rates: list[float] = []
    for label, direct in (("through the bus", False), ("engine handler called directly", True)):
        bus = EventBus(None)
        await bus.start()
        eng = AutomationEngine(bus, tmp / f"state-{int(direct)}", submit_task=lambda *a: "task-1",
                               doctor=lambda p: {"ok": True, "checks": []})
        await eng.start()
        eng.set_project(root, cfg)
        t0 = time.perf_counter()
        if direct:
            from aiwg_service.events.bus import new_event_id
            from aiwg_service.protocol import Event, utc_now

            for p in paths:
                eng.on_event(Event(new_event_id(), "file.modify", utc_now(), root, "watch", {"path": p, "kind": "c"}))
        else:
            sub = eng._sub
            for i, p in enumerate(paths):
                bus.publish("file.modify", root, {"path": p, "kind": "cold"}, "watch")
                if i % 1000 == 999:  # a real watcher publishes from the loop too, in batches
                    while len(sub.queue) > 2000:
                        await asyncio.sleep(0)
            while eng.events_seen < n:
                await asyncio.sleep(0.001)
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        written = eng.store.flush()
        ft = time.perf_counter() - t1
        print(f"  {label}: {n:,} events vs 1,000 rules in {dt:.2f}s = {n / dt:,.0f} events/s; "
              f"{eng.events_matched:,} matched a rule ({eng.events_matched / n:.0%}); "
              f"final trace flush {written:,} rows in {ft * 1e3:.0f} ms")
        rates.append(n / dt)
        await eng.stop()
        await bus.stop()
    return rates


async def latency(samples: int, tmp: Path) -> None:
    rules = [*thousand_rules(), {"id": "lat", "triggers": [{"type": "file.modify", "paths": ["hot/**/*.py"]}],
                                 "conditions": [{"match": {"field": "data.kind", "equals": "hot"}}],
                                 "actions": [{"agent": {"prompt": "fix {path}"}}], "mode": "parallel",
                                 "max_runs_per_minute": 600}]
    cfg = config.parse(json.dumps({"rules": rules, "schedule": {"jobs": []}}), "bench").config
    root = str(tmp / "proj")
    got: list[float] = []
    done = asyncio.Event()

    def submit(project, prompt, agent, priority, source, timeout_s, origin):  # type: ignore[no-untyped-def]
        got.append(time.perf_counter())
        done.set()
        return "task-1"

    bus = EventBus(None)
    await bus.start()
    eng = AutomationEngine(bus, tmp / "state-lat", submit_task=submit, doctor=lambda p: {"ok": True})
    await eng.start()
    eng.set_project(root, cfg)
    lat: list[float] = []
    for i in range(samples):
        done.clear()
        t0 = time.perf_counter()
        bus.publish("file.modify", root, {"path": f"hot/x/{i}.py", "kind": "hot"}, "watch")
        await done.wait()
        lat.append((got[-1] - t0) * 1000)
        await asyncio.sleep(0.002)
    print(f"  publish -> agent action start through the bus (1,001 rules loaded), {samples} events: "
          f"p50 {statistics.median(lat):.3f} ms, p99 {pct(lat, 0.99):.3f} ms, max {max(lat):.3f} ms")
    await eng.stop()
    await bus.stop()


async def hostile(seconds: float, tmp: Path) -> None:
    """What a ping would wait while hostile rules run: a regex that backtracks, a glob with 8 ``**``, a rule
    that emits its own trigger, a shell that never ends. Measured as the lag of a 5 ms timer on the loop."""
    rules = [
        {"id": "redos", "triggers": [{"type": "file.modify", "paths": ["/".join(["**/a"] * 8) + "/**"]}],
         "conditions": [{"match": {"field": "data.name", "regex": "^(a|aa)+$"}}],
         "actions": [{"agent": {"prompt": "never"}}], "mode": "parallel", "max": 100, "max_runs_per_minute": 600},
        {"id": "loop", "triggers": [{"type": "x.loop"}], "actions": [{"emit": {"type": "x.loop"}}],
         "ignore_own_events": False},
        {"id": "forever", "triggers": [{"type": "x.hang"}], "actions": [{"shell": "sleep 600", "timeout_seconds": 1}],
         "mode": "parallel", "max": 100},
    ]
    cfg = config.parse(json.dumps({"rules": rules, "schedule": {"jobs": []}}), "bench").config
    root = str(tmp / "proj")
    import logging

    logging.getLogger("aiwg").setLevel(logging.CRITICAL)  # each hostile run logs a warning: not the figure
    bus = EventBus(None)
    await bus.start()
    eng = AutomationEngine(bus, tmp / "state-hostile", submit_task=lambda *a: "task-1", doctor=lambda p: {"ok": True})
    await eng.start()
    eng.set_project(root, cfg)
    lags: list[float] = []
    stop = time.monotonic() + seconds

    async def ticker() -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - t - 0.005) * 1000)

    tick = asyncio.ensure_future(ticker())
    bus.publish("x.loop", root, {}, "bench")
    sent = 0
    while time.monotonic() < stop:
        bus.publish("file.modify", root, {"path": "/".join(["a"] * 41) + "/x", "name": "a" * 40 + "!"}, "watch")
        bus.publish("x.hang", root, {}, "bench")
        sent += 1
        await asyncio.sleep(0.02)
    await tick
    h = eng.health()
    print(f"  {seconds:g}s of hostile events ({sent} crafted paths, {sent} hanging shells, one self-emitting rule): "
          f"loop lag p50 {statistics.median(lags):.2f} ms, p99 {pct(lags, 0.99):.2f} ms, max {max(lags):.2f} ms "
          f"(target: pings < 10 ms); regex timeouts {h['regex_timeouts']}, chain cuts {h['chain_cuts']}, "
          f"loop-guarded rules {h['loop_guarded']}, rule processes at most {eng.gate.limit}")
    await eng.stop()
    await bus.stop()


def baseline_figures(checkout: Path, events: int) -> list[float]:
    """The same bench from another checkout (the code before a change), run now on this machine."""
    import re
    import subprocess

    out = subprocess.run([sys.executable, str(checkout / "bench" / "rules.py"), "--events", str(events),
                          "--samples", "50"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}).stdout
    return [float(x.replace(",", "")) for x in re.findall(r"s = ([\d,]+) events/s", out)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--hostile-seconds", type=float, default=5.0)
    ap.add_argument("--no-hostile", action="store_true", help="skip the hostile-rules section")
    ap.add_argument("--baseline", type=Path, help="a checkout of the code before a change: its throughput is "
                                                  "measured in the same run and the ratios printed")
    args = ap.parse_args()
    import logging

    import uvloop

    logging.getLogger("aiwg").setLevel(logging.ERROR)  # rules paused by the loop guard say so: not the figure
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "proj").mkdir()
        print("rule evaluation throughput (no shell conditions; targets >= 10,000 events/s):")
        rates = uvloop.run(throughput(args.events, tmp))
        print("latency (target: write-to-action p50 < 20 ms):")
        uvloop.run(latency(args.samples, tmp))
        if not args.no_hostile:
            print("hostile rules (regex limit, linear globs, chain cap, process cap in place):")
            uvloop.run(hostile(args.hostile_seconds, tmp))
    if args.baseline:
        before = baseline_figures(args.baseline, args.events)
        print(f"baseline {args.baseline} (same machine, same run): "
              + ", ".join(f"{x:,.0f} events/s" for x in before))
        for label, now, then in zip(("through the bus", "handler called directly"), rates, before, strict=False):
            print(f"  {label}: this checkout / baseline = {now / then:.2f}x (target: >= 0.90x)")


if __name__ == "__main__":
    main()
