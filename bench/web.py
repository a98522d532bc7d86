#!/usr/bin/env python3
"""Dashboard benchmark: time to first byte of *Now* with 1,000 tasks in the store, the delay from a task's output
line to the browser (measured in the browser), and the service's CPU with ten idle dashboards open.

The real service (``aiwg-service run``) with ``web`` on; 1,000 finished tasks written into its real task store
first (a month of them, with costs). Floors, measured in the same run: the TTFB of a static file on the same
listener (what aiohttp and the session check cost with no page behind them), and the service's CPU over the same
window with no dashboard open.

1. TTFB: GET / with the session cookie over a kept-alive connection, N times (request written -> status line).
2. Output -> browser: a shell task prints a line with its wall-clock time every 100 ms; headless Chromium on
   *Now* notes when each line appears in the page (a MutationObserver added over the DevTools protocol);
   delay = appeared - printed, on the same clock.
3. Idle: ten dashboards (two Chromium instances with five windows each: a browser opens at most six connections
   to one host, and a hidden tab gives its stream back) on *Now*, each holding its live stream; the service's
   CPU time over the window.
Usage: PYTHONPATH=. python bench/web.py [--samples 300] [--idle 30]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from service_fixture import ServiceEnv, kill_agents, wait_for  # noqa: E402
from web_support import CHROMEDRIVER, CHROMIUM, login_url, seed_finished_tasks, start_web_service  # noqa: E402

OBSERVER = """
window.__seen = [];
new MutationObserver(function (muts) {
  var now = Date.now();
  muts.forEach(function (m) { m.addedNodes.forEach(function (n) {
    var re = /line (\\d+) at (\\d+)/g, x;
    while ((x = re.exec(n.textContent || "")) !== null) { window.__seen.push([+x[1], +x[2], now]); }
  }); });
}).observe(document.body, {subtree: true, childList: true});
"""


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              f"--user-data-dir={tempfile.mkdtemp(prefix='aiwg-bench-')}"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ttfb(port: int, path: str, cookie: str, n: int) -> list[float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            c.request("GET", path, headers={"Cookie": cookie})
            r = c.getresponse()
            out.append(time.perf_counter() - t0)
            r.read()
            assert r.status == 200, (path, r.status)
    finally:
        c.close()
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {statistics.median(xs) * 1000:6.2f} ms  p95 {xs[int(0.95 * (len(xs) - 1))] * 1000:6.2f} ms  "
            f"max {xs[-1] * 1000:6.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiwg-bench-web-"))
    env = ServiceEnv(tmp)
    seed_finished_tasks(env.state_dir, [str(env.project.resolve())], 1000)
    port = start_web_service(env)
    browsers: list[Any] = []
    try:
        pid = env.proc.pid  # type: ignore[union-attr]
        url = login_url(env)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", url.split(str(port), 1)[1])
        cookie = c.getresponse().getheader("Set-Cookie", "").split(";", 1)[0]
        c.close()
        assert env.call("task.stats")["total"] >= 1000
        ttfb(port, "/", cookie, 20)  # warm up (templates compiled, caches filled)
        now = ttfb(port, "/", cookie, args.samples)
        costs = ttfb(port, "/costs", cookie, max(args.samples // 5, 20))
        floor = ttfb(port, "/static/app.css", cookie, args.samples)
        print(f"TTFB, 1,000 tasks in the store ({args.samples} requests, keep-alive)")
        print(f"  Now                  {ms(now)}   (target < 50 ms)")
        print(f"  Costs (30 days)      {ms(costs)}")
        print(f"  floor: a static file {ms(floor)}")
        print(f"  ratio Now / floor (median): {statistics.median(now) / statistics.median(floor):.1f}x")

        # 2. output line -> browser
        b = chromium()
        browsers.append(b)
        b.get(login_url(env))
        wait_for(lambda: b.execute_script("return document.body.dataset.page") == "now", 20)
        b.execute_script(OBSERVER)
        cmd = 'for i in $(seq 1 60); do echo "line $i at $(date +%s%3N)"; sleep 0.1; done'
        tid = env.call("task.submit", {"prompt": cmd, "agent": "sh"})["taskId"]
        wait_for(lambda: env.call("task.get", {"taskId": tid})["state"] in ("completed", "failed"), 60)
        time.sleep(0.5)
        seen = b.execute_script("return window.__seen")
        first = {}
        for n, printed, appeared in seen:
            first.setdefault(n, appeared - printed)
        # line 1 can arrive with the task-start redraw (a fetch); the rest stream
        delays = [d / 1000 for n, d in sorted(first.items()) if n > 1]
        print(f"\noutput line -> browser ({len(delays)} lines seen of 59; clock in the page, ms resolution)")
        print(f"  delay                {ms(delays)}   (target < 100 ms)")

        # 3. idle CPU: with none open (floor), then with ten dashboards open
        b.quit()
        browsers.clear()
        time.sleep(2)
        c0 = cpu_seconds(pid)
        time.sleep(args.idle)
        idle_none = cpu_seconds(pid) - c0
        for _ in range(2):
            br = chromium()
            browsers.append(br)
            br.get(login_url(env))
            for _t in range(4):
                br.switch_to.new_window("window")
                br.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: env.call("daemon.status")["subsystems"]["web"]["streams"] >= 10, 30,
                 what="ten live streams")
        time.sleep(3)
        streams = env.call("daemon.status")["subsystems"]["web"]["streams"]
        c0 = cpu_seconds(pid)
        t0 = time.monotonic()
        time.sleep(args.idle)
        idle_ten = cpu_seconds(pid) - c0
        span = time.monotonic() - t0
        print(f"\nservice CPU over {span:.0f} s idle (clock ticks of 10 ms)")
        print(f"  no dashboard open    {idle_none:.2f} s ({idle_none / span * 100:.2f}%)")
        print(f"  {streams} dashboards open   {idle_ten:.2f} s ({idle_ten / span * 100:.2f}%)   (target 0; "
              f"heartbeats every 30 s)")
    finally:
        for br in browsers:
            with contextlib.suppress(Exception):
                br.quit()
        env.stop()
        kill_agents(env.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
