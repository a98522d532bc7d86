"""The dashboard under test: a real service with ``web`` on, Debian's Chromium driven by Selenium, screenshots.

Chromium runs headless with a fresh profile; screenshots go to ``tests/artifacts/web/`` (ignored by git), or
``$AIWG_ARTIFACTS/web``, and their paths are printed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_fixture import ServiceEnv, wait_for
from webhook_support import free_port

from tests.tasks_support import make_fakebin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("AIWG_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts") / "web"
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
PHONE = (390, 844)
DESKTOP = (1280, 900)


def start_web_service(env: ServiceEnv, project_config: dict[str, Any] | None = None,
                      service_config: dict[str, Any] | None = None) -> int:
    port = free_port()
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"
    env.env["AIWG_METRICS_TOKEN"] = METRICS_TOKEN
    cfg = {"daemon": {"stop_timeout_seconds": 0}, "web": {"enabled": True, "port": port},
           "agents": {"sh": {"kind": "shell"}}, **(service_config or {})}
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    if project_config is not None:
        env.write_project_config(project_config)
    env.start()
    wait_for(lambda: env.call("daemon.status")["subsystems"]["web"]["listening"], 15, what="the dashboard listening")
    return port


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
         ) -> tuple[int, dict[str, str], str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def login_url(env: ServiceEnv) -> str:
    res = env.ctl("web", "--print-url", check=True)
    return res.stdout.strip()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # the whole page, not just the viewport: as tall as the document
    h = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    w = driver.get_window_size()["width"]
    driver.set_window_size(w, max(int(h) + 140, 500))
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def both_widths(driver: Any, name: str) -> list[Path]:
    """Screenshots at 1280 px and at a phone's width; the page never scrolls sideways at either."""
    out = []
    for label, (w, h) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(w, h)
        wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 10)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {w}px"
        out.append(screenshot(driver, f"{name}-{label}"))
    driver.set_window_size(*DESKTOP)
    return out


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="aiwg-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """Console messages at SEVERE (a CSP violation is one): the pages must produce none."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def seed_finished_tasks(state_dir: Path, projects: list[str], n: int, days: int = 30) -> float:
    """``n`` finished tasks with costs spread over the last ``days`` days and ``projects``, written into the real
    task store before the service starts (as if they had run). Returns their total cost."""
    from datetime import UTC, datetime, timedelta

    from aiwg_service.tasks.model import Task, TaskState, new_task_id
    from aiwg_service.tasks.store import Store

    now = datetime.now(UTC)
    total = 0.0
    with Store(state_dir) as store:
        for i in range(n):
            # at most days-2 whole days and an hour back: inside the page's last ``days`` calendar days whatever
            # the time of day the test runs (just after midnight, the oldest day would fall outside)
            end = now - timedelta(days=(i * 7) % (days - 1), minutes=i % 50 + 1)
            start = end - timedelta(seconds=20 + (i * 37) % 900)
            cost = round(0.02 + ((i * 13) % 17) / 40, 4)
            total += cost
            state = TaskState.failed if i % 11 == 0 else TaskState.completed
            iso = "%Y-%m-%dT%H:%M:%S.000Z"
            store.insert(Task(id=new_task_id(), project=projects[i % len(projects)], prompt=f"seeded task {i}",
                              state=state, created_at=start.strftime(iso), started_at=start.strftime(iso),
                              finished_at=end.strftime(iso), cost_usd=cost, attempts=1, exit_code=0))
    return total
