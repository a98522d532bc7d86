"""The dashboard in a real browser (Debian's Chromium, headless, driven by Selenium) against the real service:
login through the one-time URL, a task from aiwgctl streaming on Now, cancel from the page, an approval decided
via web and the rule going on, a trace from a file event, agent output with <script> shown as text; requests
without the cookie or the CSRF token refused; /metrics parsed by prometheus_client and checked against the
service's own counts. Screenshots of every page at 1280 px and a phone's width go to tests/artifacts/web/."""

from __future__ import annotations

import json
import re
from typing import Any

from service_fixture import ServiceEnv, wait_for
from web_support import METRICS_TOKEN, both_widths, browser, console_errors, login_url, request, start_web_service

__all__ = ["browser"]

PROJECT = {
    "watch": {"paths": [{"path": "inbox/", "events": ["create", "modify"]}], "debounce_ms": 50},
    "schedule": {"jobs": []},
    "rules": [{"id": "ship", "triggers": [{"type": "file.*", "paths": ["inbox/*.req"]}],
               "actions": [{"approve": {"message": "ship {path}?", "timeout_minutes": 30}},
                           {"shell": "cp \"$AIWG_EVENT_PATH\" shipped.txt"},
                           {"agent": {"prompt": "echo reviewed {path}", "agent": "sh"}}],
               "mode": "queued", "max": 5}],
}


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def log_text(driver: Any, task_id: str) -> str:
    return js(driver, "var p = document.querySelector('pre.log[data-task=\"' + arguments[0] + '\"]');"
                      "return p ? p.textContent : '';", task_id) or ""


def test_the_dashboard_in_a_real_browser(svc_env: ServiceEnv, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    env = svc_env
    (env.project / "inbox").mkdir()
    port = start_web_service(env, PROJECT)
    base = f"http://127.0.0.1:{port}"

    # login: the one-time URL sets an HttpOnly, SameSite=Strict cookie and lands on Now
    url = login_url(env)
    assert url.startswith(f"{base}/login?token=")
    browser.get(url)
    wait_for(lambda: browser.current_url == f"{base}/", 15, what="the redirect to Now")
    cookie = browser.get_cookie(f"aiwg_session_{port}")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert js(browser, "return document.cookie") == ""  # not readable by any script
    # the link is spent: a second visit (another browser, someone who saw it) gets no session
    status, _h, body = request(port, "GET", url[len(base):])
    assert status == 403 and "aiwgctl web" in body

    # a task submitted from aiwgctl appears on Now with its output streaming in, as readable lines
    prompt = "ticks=400 tick=0.05 tok=1 <script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    out = env.ctl("task", "submit", prompt, "--json", check=True).stdout
    task_id = json.loads(out)["taskId"]
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'article.task[data-task="{task_id}"]'), 20,
             what="the task on Now (pushed by the stream, no reload)")
    wait_for(lambda: "tick 3" in log_text(browser, task_id), 20, what="its output streaming in")
    first = log_text(browser, task_id)
    wait_for(lambda: len(log_text(browser, task_id)) > len(first), 20, what="more output, live")
    text = log_text(browser, task_id)
    assert "· session" in text and "→ Bash: ls" in text and '"type": "assistant"' not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("tick ")]
    assert lines == [f"tick {i}" for i in range(len(lines))]  # each line once, in order (ticks count from 0)
    # agent output with markup in it, from a shell task: shown as text, never run
    shell = env.ctl("task", "submit", "--agent", "sh", "--json",
                    "for i in $(seq 1 300); do echo \"<script>window.pwned=$i</script><b>$i</b>\"; sleep 0.1; done",
                    check=True).stdout
    shell_id = json.loads(shell)["taskId"]
    wait_for(lambda: "<script>window.pwned=2</script><b>2</b>" in log_text(browser, shell_id), 20,
             what="the shell task's markup, as text")
    assert js(browser, "return document.querySelectorAll('main script, main img, main pre b').length") == 0
    assert js(browser, "return window.pwned === undefined")
    assert "<script>window.pwned=1</script>" in browser.find_element(
        By.CSS_SELECTOR, f'article.task[data-task="{task_id}"] p.prompt').text
    both_widths(browser, "now")
    env.call("task.cancel", {"taskId": shell_id})

    # the task's page: prompt, profile, executor, cost, its log streaming, a link to its trace
    browser.get(f"{base}/tasks/{task_id}")
    facts = browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "claude" in facts and "local" in facts
    wait_for(lambda: "tick" in log_text(browser, task_id), 15, what="the task page's log")
    grown = log_text(browser, task_id)
    wait_for(lambda: len(log_text(browser, task_id)) > len(grown), 20, what="the task page's log streaming")
    lines = [ln for ln in log_text(browser, task_id).splitlines() if ln.startswith("tick ")]
    assert lines == [f"tick {int(lines[0].split()[1]) + i}" for i in range(len(lines))]
    assert browser.find_element(By.CSS_SELECTOR, "main a.button").get_attribute("href") == f"{base}/trace/{task_id}"
    both_widths(browser, "task")

    # cancel from Now
    browser.get(f"{base}/")
    button = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'button[data-task="{task_id}"]'), 15,
                      what="the cancel button")[0]
    button.click()
    wait_for(lambda: env.call("task.get", {"taskId": task_id})["state"] == "cancelled", 20, what="the cancel")
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, f'article.task[data-task="{task_id}"]'), 15,
             what="Now to drop the cancelled task by itself")

    # an approval: exactly what will run is shown; approve on the page, decided via web, and the rule goes on
    (env.project / "inbox" / "one.req").write_text("payload one\n")
    ap = wait_for(lambda: env.call("approval.list", {})["approvals"], 15, what="a pending approval")[0]
    browser.get(f"{base}/approvals")
    card = browser.find_element(By.CSS_SELECTOR, f'article[data-approval="{ap["id"]}"]')
    assert "ship inbox/one.req?" in card.text and '$ cp "$AIWG_EVENT_PATH" shipped.txt' in card.text
    both_widths(browser, "approvals")
    card = browser.find_element(By.CSS_SELECTOR, f'article[data-approval="{ap["id"]}"]')
    card.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("looks right")
    card.find_element(By.CSS_SELECTOR, "button.ok").click()
    wait_for(lambda: (env.project / "shipped.txt").exists(), 20, what="the approved rule to go on")
    decided = env.call("approval.list", {"state": "all"})["approvals"][0]
    assert decided["state"] == "approved" and decided["decided_via"] == "web" and decided["reason"] == "looks right"
    assert "approved" in browser.find_element(By.TAG_NAME, "main").text

    # a trace from the file event: event -> rule run (approved, success), drawn as an expandable tree
    ev = next(e for e in env.call("events.list", {"type": "file.*"})["events"] if "one.req" in json.dumps(e))
    browser.get(f"{base}/trace/{ev['id']}")
    tree = browser.find_element(By.CSS_SELECTOR, ".tree")
    assert ev["type"] in tree.text and "ship" in tree.text
    assert browser.find_elements(By.CSS_SELECTOR, ".tree details.k-rule_run")
    wait_for(lambda: env.call("task.list", {"state": "completed"}), 20, what="the rule's agent task")
    browser.refresh()
    tree = browser.find_element(By.CSS_SELECTOR, ".tree")
    assert "approved by" in tree.text and "via web" in tree.text
    assert browser.find_elements(By.CSS_SELECTOR, ".tree details.k-task a[href^='/tasks/t-']")
    summary = browser.find_element(By.CSS_SELECTOR, ".tree details.k-event > summary")
    summary.click()  # folds
    assert js(browser, "return document.querySelector('.tree details.k-event').open") is False
    summary.click()
    both_widths(browser, "trace")

    # events: live rows pushed by the stream, filters, and resuming after a reload
    browser.get(f"{base}/events?type=file.*")
    (env.project / "inbox" / "live.txt").write_text("x")
    wait_for(lambda: "inbox/live.txt" in browser.find_element(By.ID, "events").text, 20, what="a live event row")
    resumed_from = js(browser, "return sessionStorage.getItem('aiwg-events:file.*:')")
    assert resumed_from
    (env.project / "inbox" / "while-away.txt").write_text("x")  # written while the page reloads
    browser.refresh()
    wait_for(lambda: "inbox/while-away.txt" in browser.find_element(By.ID, "events").text, 20,
             what="the event written around the reload")
    assert "task." not in browser.find_element(By.ID, "events").text  # the type filter holds
    # a file name is text from outside too: shown as text in a live row, never run
    (env.project / "inbox" / "<img src=x onerror=window.pwned=3>.txt").write_text("x")
    wait_for(lambda: "<img src=x onerror=window.pwned=3>" in browser.find_element(By.ID, "events").text, 20,
             what="the row of the odd file name")
    assert js(browser, "return document.querySelectorAll('main img, main script').length") == 0
    assert js(browser, "return window.pwned === undefined")
    both_widths(browser, "events")

    browser.get(f"{base}/costs")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart")

    # a strict CSP held everywhere, and nothing broke it
    assert not [m for m in console_errors(browser) if "Content Security Policy" in m or "Refused" in m]


def test_requests_without_the_cookie_or_the_csrf_token_are_refused(svc_env: ServiceEnv) -> None:
    env = svc_env
    port = start_web_service(env)
    status, headers, body = request(port, "GET", "/")
    assert status == 401 and "aiwgctl web" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    for path in ("/sse/now", "/partials/now", "/approvals", "/costs", "/tasks/t-x", "/trace/ev-x"):
        assert request(port, "GET", path)[0] == 401, path
    assert request(port, "POST", "/tasks/t-1/cancel")[0] == 401

    # log in as a browser would, then try state changes without and with a wrong CSRF token
    url = login_url(env)
    status, headers, _ = request(port, "GET", url.split(str(port), 1)[1])
    assert status == 303
    # `aiwgctl web` (no flag) hands a fresh link to the desktop's browser ($BROWSER, as xdg-open would)
    opened = env.tmp / "opened.txt"
    fake_browser = env.tmp / "fake-browser"
    fake_browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    fake_browser.chmod(0o755)
    env.env["BROWSER"] = f"{fake_browser} %s"
    out = env.ctl("web", check=True).stdout
    assert "opened the dashboard in your browser" in out
    assert opened.read_text().strip().startswith(f"http://127.0.0.1:{port}/login?token=")
    assert request(port, "GET", opened.read_text().strip().split(str(port), 1)[1])[0] == 303
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    sid = cookie.split(";", 1)[0]
    page = request(port, "GET", "/", {"Cookie": sid})[2]
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    task = env.call("task.submit", {"prompt": "sleep 30", "agent": "sh"})
    tid = task["taskId"]
    form = {"Cookie": sid, "Content-Type": "application/x-www-form-urlencoded"}
    assert request(port, "POST", f"/tasks/{tid}/cancel", form, b"next=/")[0] == 403
    assert request(port, "POST", f"/tasks/{tid}/cancel", form, b"csrf=wrong&next=/")[0] == 403
    assert request(port, "POST", f"/tasks/{tid}/cancel", {**form, "Origin": "http://evil.example"},
                   f"csrf={csrf}".encode())[0] == 403
    assert env.call("task.get", {"taskId": tid})["state"] in ("queued", "running")
    assert request(port, "POST", f"/tasks/{tid}/cancel", form, f"csrf={csrf}&next=/".encode())[0] == 303
    wait_for(lambda: env.call("task.get", {"taskId": tid})["state"] == "cancelled", 15, what="the cancel")
    # the static files need no session (they hold nothing), and nothing loads from elsewhere
    for asset in ("/static/app.js", "/static/app.css"):
        status, _h, text = request(port, "GET", asset)
        assert status == 200 and "://" not in text, asset


def test_metrics_parsed_by_prometheus_client_match_the_service(svc_env: ServiceEnv) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    env = svc_env
    port = start_web_service(env)
    assert request(port, "GET", "/metrics")[0] == 401
    assert request(port, "GET", "/metrics", {"Authorization": "Bearer nope"})[0] == 401
    ids = [env.call("task.submit", {"prompt": f"echo hello {i}", "agent": "sh"})["taskId"] for i in range(3)]
    failing = env.call("task.submit", {"prompt": "exit 3", "agent": "sh"})["taskId"]
    for tid in [*ids, failing]:
        wait_for(lambda tid=tid: env.call("task.get", {"taskId": tid})["state"] in ("completed", "failed"), 30,
                 what=f"{tid} to finish")
    status, headers, text = request(port, "GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200 and headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    stats = env.call("task.stats", {})
    by_state = {s.labels["state"]: s.value for s in fams["aiwg_tasks"].samples}
    assert by_state["completed"] == stats["completed"] == 3 and by_state["failed"] == stats["failed"] == 1
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["aiwg_task_duration_seconds"].samples}
    assert hist[("aiwg_task_duration_seconds_count", None)] == 4 == hist[("aiwg_task_duration_seconds_bucket", "+Inf")]
    status_now = env.call("daemon.status")
    events = {s.labels["type"]: s.value for s in fams["aiwg_events"].samples}
    assert events.get("task.completed") == status_now["subsystems"]["router"]["events_by_type"]["task.completed"]
    assert fams["aiwg_queue_depth"].samples[0].value == 0
    watched = {s.labels["project"]: s.value for s in fams["aiwg_watcher_watched_dirs"].samples}
    assert str(env.project.resolve()) in watched
    for name in ("aiwg_rule_runs", "aiwg_rpc_connections", "aiwg_rpc_notifications_dropped",
                 "aiwg_webhook_deliveries", "aiwg_bridge_up", "aiwg_budget_spent_usd", "aiwg_task_cost_usd",
                 "aiwg_watcher_overflows"):
        assert name in fams, name


def test_aiwgctl_web_says_plainly_when_the_dashboard_is_off(service: ServiceEnv) -> None:
    res = service.ctl("web", "--print-url")
    assert res.returncode == 1 and "the dashboard is off" in res.stderr and "aiwgctl install --web" in res.stderr
    web = service.call("daemon.status")["subsystems"]["web"]
    assert web["enabled"] is False and web["listening"] is None


def test_the_web_stack_loads_only_for_the_dashboard() -> None:
    """Building every subsystem imports none of aiohttp's server, Jinja2 or prometheus_client: a service with the
    dashboard off pays nothing for it at start-up."""
    import subprocess
    import sys

    code = ("import sys, aiwg_service.schemas, aiwg_service.wiring, aiwg_service.web.subsystem; "
            "print(sorted(m for m in ('jinja2', 'prometheus_client', 'aiohttp.web', 'aiwg_service.web.app') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_costs_chart_with_a_month_of_tasks_and_budgets(svc_env: ServiceEnv, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from web_support import seed_finished_tasks

    env = svc_env
    other = env.tmp / "webshop"
    other.mkdir()
    total = seed_finished_tasks(env.state_dir, [str(env.project.resolve()), str(other.resolve())], 120)
    port = start_web_service(env, service_config={"budgets": {"service_daily_usd": 2.5, "project_daily_usd": 1.5}})
    browser.get(login_url(env))
    browser.get(f"http://127.0.0.1:{port}/costs")
    header = browser.find_element(By.TAG_NAME, "h1").text
    assert f"${total:.2f}" in header
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) >= 5
    assert "<script" not in bars[0].get_attribute("innerHTML")
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.chart line.budget")
    assert len(lines) >= 1  # the service's daily budget, drawn as a line
    rows = browser.find_elements(By.CSS_SELECTOR, "section table tbody tr")
    assert any("webshop" in r.text for r in rows)
    both_widths(browser, "costs")


def test_approvers_hold_on_the_web_too(svc_env: ServiceEnv) -> None:
    """An approval that names its approvers cannot be decided from the dashboard by anyone else; one that names
    ``web`` can."""
    env = svc_env
    (env.project / "inbox").mkdir()
    rules = {**PROJECT, "rules": [
        {"id": "guarded", "triggers": [{"type": "file.*", "paths": ["inbox/*.req"]}],
         "actions": [{"approve": {"message": "only alice", "approvers": ["alice"]}}, {"shell": "touch ran"}]},
        {"id": "webok", "triggers": [{"type": "file.*", "paths": ["inbox/*.web"]}],
         "actions": [{"approve": {"message": "web may", "approvers": ["web"]}}, {"shell": "touch ran-web"}]}]}
    port = start_web_service(env, rules)
    url = login_url(env)
    sid = request(port, "GET", url.split(str(port), 1)[1])[1]["set-cookie"].split(";", 1)[0]
    page = request(port, "GET", "/approvals", {"Cookie": sid})[2]
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"Cookie": sid, "Content-Type": "application/x-www-form-urlencoded"}

    (env.project / "inbox" / "a.req").write_text("x")
    ap = wait_for(lambda: env.call("approval.list", {})["approvals"], 15, what="the guarded approval")[0]
    status, _h, body = request(port, "POST", f"/approvals/{ap['id']}/approve", form, f"csrf={csrf}".encode())
    assert status == 409 and "Not decided" in body and "alice" in body
    assert env.call("approval.list", {})["approvals"][0]["state"] == "pending"

    (env.project / "inbox" / "b.web").write_text("x")
    ap2 = wait_for(lambda: [a for a in env.call("approval.list", {})["approvals"] if a["rule_id"] == "webok"], 15,
                   what="the web approval")[0]
    status, _h, _b = request(port, "POST", f"/approvals/{ap2['id']}/approve", form, f"csrf={csrf}".encode())
    assert status == 303
    wait_for(lambda: (env.project / "ran-web").exists(), 15, what="the rule approved via web to go on")
    assert not (env.project / "ran").exists()
