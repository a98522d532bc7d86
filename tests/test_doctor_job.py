"""The doctor, run by a rule in the real service: its checks (config, socket, watcher, disk, agent) land in the
run's trace, and a failing check fails the run, naming it."""

from __future__ import annotations

import json

from service_fixture import ServiceEnv, wait_for
from tasks_support import make_fakebin

CFG = {"watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["create"]}]}, "schedule": {"jobs": []},
       "rules": [{"id": "checkup", "triggers": [{"type": "file.create", "paths": ["src/**"]}],
                  "actions": [{"doctor": {}}]}]}


def last_run(env: ServiceEnv) -> dict | None:
    runs = env.call("automation.trace", {"ruleId": "checkup"})
    runs = runs["runs"] if isinstance(runs, dict) else runs
    return runs[0] if runs else None


def full(env: ServiceEnv, run_id: str) -> dict:
    res = env.call("automation.trace", {"ruleId": "checkup", "runId": run_id})
    return res.get("run", res)


def test_the_doctor_runs_its_checks_from_a_rule(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"  # an agent on PATH: every check passes
    (env.project / "src").mkdir()
    env.write_project_config(CFG)
    env.start()
    (env.project / "src" / "a").write_text("1")
    run = wait_for(lambda: last_run(env), 20, what="the doctor's run")
    assert run["outcome"] == "success", run
    action = full(env, run["run_id"])["actions"][0]
    names = {c["name"]: c["ok"] for c in action["result"]["checks"]}
    assert {"config", "socket", "watcher", "disk", "agent"} <= set(names) and all(names.values()), action


def test_a_failing_check_fails_the_run_and_names_it(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["PATH"] = "/usr/bin:/bin"  # no `claude` anywhere
    (env.project / "src").mkdir()
    env.write_project_config(CFG)
    env.start()
    (env.project / "src" / "a").write_text("1")
    run = wait_for(lambda: last_run(env), 20, what="the doctor's run")
    assert run["outcome"] != "success" and "agent" in (run.get("reason") or ""), json.dumps(run)
