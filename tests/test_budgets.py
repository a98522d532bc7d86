"""Budgets through the real service: a per-task budget stops an agent whose cost rises past it; a
per-project daily budget holds the next task until a reload raises it; bad limits are config errors;
the admission check alone is fast enough to call on every start (bench/budget.py measures it)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from service_fixture import ServiceEnv, wait_for

from aiwg_service.budgets.ledger import Ledger
from aiwg_service.budgets.schema import BudgetSection
from aiwg_service.tasks.model import Task, TaskState
from tests.tasks_support import make_fakebin
from tests.test_tasks_api import wait_state, write_service_config

PRICED = {"claude": {"price_per_mtok": {"output": 10.0}}}  # 1000 output tokens = $0.01


def start(env: ServiceEnv, agents: dict[str, Any], project: dict[str, Any] | None = None) -> None:
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"
    write_service_config(env, None, agents)
    if project is not None:
        env.write_project_config(project)
    env.start()


def events(env: ServiceEnv, type_: str) -> list[dict[str, Any]]:
    return env.call("events.list", {"type": type_})["events"]


def test_task_budget_stops_a_rising_cost(svc_env: ServiceEnv) -> None:
    start(svc_env, PRICED)
    t = svc_env.call("task.submit", {"prompt": "ticks=40 tick=0.1", "max_budget_usd": 0.035})
    done = wait_state(svc_env, t["taskId"], "failed", timeout=30)
    assert done["error"].startswith("stopped: its cost $0.04") and "passed its budget $0.035" in done["error"]
    assert done["signal"] == 15 and done["cost_status"] == "estimated" and done["cost_usd"] >= 0.035
    log = Path(done["log_path"]).read_text()
    init = json.loads(log.splitlines()[0])
    argv = init["argv"]
    assert argv[argv.index("--max-budget-usd") + 1] == "0.035" and "ticks=40" not in argv  # the prompt: stdin
    assert log.count('"tick ') < 40  # stopped early
    ex = events(svc_env, "budget.exceeded")
    assert ex and ex[-1]["data"]["budget"] == "task" and ex[-1]["data"]["task"] == t["taskId"]


def test_project_daily_budget_holds_then_reload_releases(svc_env: ServiceEnv) -> None:
    start(svc_env, {}, {"budgets": {"project_daily_usd": 0.015}})
    first = svc_env.call("task.submit", {"prompt": "one"})["taskId"]  # costs $0.0123: 82 % -> warning
    assert wait_state(svc_env, first, "completed")["cost_usd"] == 0.0123
    warn = wait_for(lambda: events(svc_env, "budget.warning"), 10, what="budget.warning")
    assert warn[-1]["data"]["budget"] == "project.daily" and warn[-1]["data"]["spent_usd"] == 0.0123
    second = svc_env.call("task.submit", {"prompt": "two"})["taskId"]
    assert wait_state(svc_env, second, "completed")["cost_usd"] == 0.0123  # 0.0123 < 0.015: allowed
    third = svc_env.call("task.submit", {"prompt": "three"})["taskId"]
    held = wait_state(svc_env, third, "held")
    assert held["held_reason"].startswith("project.daily budget for ") and "$0.0246 of $0.015" in held["held_reason"]
    ex = events(svc_env, "budget.exceeded")
    assert len(ex) == 1 and ex[0]["data"] | {"period": "x"} == {  # once, when the second task crossed it
        "budget": "project.daily", "key": str(svc_env.project), "period": "x", "spent_usd": 0.0246,
        "limit_usd": 0.015}
    assert events(svc_env, "task.held")[-1]["data"]["held_reason"] == held["held_reason"]
    res = svc_env.ctl("budget", check=True).stdout
    assert "project.daily" in res and "$0.0246" in res and third in res
    js = json.loads(svc_env.ctl("budget", "--json", check=True).stdout)
    assert js["budgets"][0]["held"] == [third] and js["held"][0]["taskId"] == third
    fourth = svc_env.call("task.submit", {"prompt": "four"})["taskId"]
    wait_state(svc_env, fourth, "held")
    assert svc_env.call("task.cancel", {"taskId": fourth})["state"] == "cancelled"  # a held task can be cancelled
    time.sleep(0.3)
    assert svc_env.call("task.get", {"taskId": third})["state"] == "held"  # never silently dropped
    svc_env.write_project_config({"budgets": {"project_daily_usd": 1}})
    svc_env.ctl("reload", check=True)
    done = wait_state(svc_env, third, "completed")
    assert done["held_reason"] is None


def test_bad_budget_is_a_config_error_naming_the_field(svc_env: ServiceEnv) -> None:
    start(svc_env, {})
    svc_env.write_project_config({"budgets": {"project_daily_usd": -1, "rules": {"lint": "a lot"}}})
    res = svc_env.ctl("reload")
    assert res.returncode == 1
    assert ".aiwg/daemon.json: budgets.project_daily_usd: -1 must be >= 0" in res.stderr
    assert "budgets.rules.lint: must be a number" in res.stderr


def test_ledger_rolls_to_a_new_day_and_counts_live_costs() -> None:
    now = [1_764_500_000.0]  # some day, 12:53 UTC
    rows = [("/p", "r1", 0.5, "2025-11-30T09:00:00.000Z"), ("/p", None, 0.25, "2025-11-02T09:00:00.000Z")]
    svc = BudgetSection(service_daily_usd=1.0, service_monthly_usd=0.9, tz="UTC")
    prj = BudgetSection(project_daily_usd=0.6, rules={"r1": 0.5})
    got: list[tuple[str, dict[str, Any]]] = []
    led = Ledger(lambda since: [r for r in rows if r[3] >= since], lambda: (svc, {"/p": prj}),
                 lambda e, _p, d: got.append((e, d)), clock=lambda: now[0])
    led.reload()
    t = Task(id="t-1", project="/p", prompt="x", origin={"rule": "r1"})
    assert led.admit(t) is not None and "rule.daily" in led.admit(t)  # the rule's $0.5 is spent
    assert led.admit(Task(id="t-2", project="/p", prompt="x")) is None  # 0.5 < 0.6 for the project
    running = Task(id="t-3", project="/p", prompt="x", state=TaskState.running)
    led.on_cost(running, 0.15)
    assert "service.monthly" in (led.admit(Task(id="t-4", project="/q", prompt="x")) or "")  # 0.9 with live
    assert ("budget.warning", {"budget": "project.daily", "key": "/p", "period": "2025-11-30", "spent_usd": 0.65,
                               "limit_usd": 0.6}) not in got
    assert any(e == "budget.exceeded" and d["budget"] == "project.daily" for e, d in got)
    now[0] += 86400 * 3  # a new day (and month)
    assert led.admit(Task(id="t-5", project="/p", prompt="x", origin={"rule": "r1"})) is None
