"""Through the real service process: rules from .aiwg/daemon.json, RPC as AIWG clients call it, persistence.

The service has no event source yet in this branch (watcher, scheduler and supervisor land elsewhere), so events
cannot be injected from outside; automation.test drives the real engine's trigger match and shell conditions.
TODO(integrator): once the watcher and supervisor are wired, add: write src/x.py -> file.modify -> rule runs its
shell condition -> agent task queued (task.list shows it, automation.trace shows the task id).
"""

from __future__ import annotations

import os
from pathlib import Path

from service_fixture import ServiceEnv, wait_for

# the service subprocess runs from a temp cwd, so a relative PYTHONPATH=. would load another checkout's package
WORKTREE = str(Path(__file__).resolve().parent.parent)

RULES = {
    "rules": [
        {"id": "ts-review", "trigger": {"type": "file.modify", "pattern": "^file\\.modify:watch$"},
         "conditions": [{"field": "payload.path", "operator": "matches", "value": "\\.ts$"}],
         "action": {"type": "agent", "prompt": "Review {{payload.path}}"}},
        {"id": "lint-fix", "triggers": [{"type": "file.modify", "paths": ["src/**/*.py"]}],
         "conditions": [{"shell": "echo $AIWG_EVENT_PATH > checked.txt; exit 1", "expect": "fail"}],
         "actions": [{"agent": {"prompt": "Fix the lint errors in {paths}"}}, {"shell": "touch acted.txt"}],
         "mode": "queued", "max": 3},
    ],
    "schedule": {"jobs": [{"id": "health-check", "cron": "0 */6 * * *", "action": "doctor"}]},
}


def test_rules_through_the_real_service(svc_env: ServiceEnv) -> None:
    svc_env.env["PYTHONPATH"] = os.pathsep.join(x for x in (WORKTREE, svc_env.env.get("PYTHONPATH")) if x)
    svc_env.write_project_config(RULES)
    svc_env.start()
    root = str(svc_env.project.resolve())
    c = svc_env.connect()
    try:
        # the AIWG daemon's clients call automation.status without params
        reply = c.request("automation.status")
        rules = {r["id"]: r for r in reply["result"]["rules"]}
        assert set(rules) == {"ts-review", "lint-fix", "schedule:health-check"}
        assert rules["lint-fix"]["mode"] == "queued" and rules["lint-fix"]["enabled"] is True
        assert rules["schedule:health-check"]["next_fire"] and rules["lint-fix"]["project"] == root
        res = c.call("automation.test", {"ruleId": "lint-fix",
                                         "event": {"type": "file.modify", "data": {"path": "src/pkg/a.py"}}})
        assert res["triggered"] and res["conditions_passed"] and res["would_run"]
        assert res["actions"][0]["prompt"] == "Fix the lint errors in src/pkg/a.py"
        assert (svc_env.project / "checked.txt").read_text() == "src/pkg/a.py\n"
        assert not (svc_env.project / "acted.txt").exists()
        bad = c.request("automation.disable", {"ruleId": "nope"})
        assert bad["error"]["code"] == -32602 and bad["error"]["message"] == "Invalid params: ruleId: no rule 'nope'"
        assert c.call("automation.disable", {"ruleId": "ts-review"}) == {"ruleId": "ts-review", "enabled": False}
        health = c.call("daemon.status")["subsystems"]["automation"]
        assert health["rules"] == 3 and health["enabled"] == 2
    finally:
        c.close()
    # an invalid rule is refused on reload, naming the rule and the field; the old rules keep running
    bad_cfg = {"rules": [{**RULES["rules"][0], "trigger": {"pattern": "*.ts"}}]}
    svc_env.write_project_config(bad_cfg)
    c = svc_env.connect()
    try:
        reply = c.request("daemon.reload")
        errors = reply["error"]["data"]["errors"]
        assert any("rules[0] (ts-review): trigger.pattern: \"*.ts\" is not a valid regular expression" in e
                   for e in errors), errors
        assert len(c.call("automation.status")["rules"]) == 3
    finally:
        c.close()
    # the disable survives a restart
    svc_env.write_project_config(RULES)
    assert svc_env.stop() == 0
    svc_env.start()
    st = wait_for(lambda: svc_env.call("automation.status", {}), what="automation.status")
    rules = {r["id"]: r for r in st["rules"]}
    assert rules["ts-review"]["enabled"] is False and "automation.disable" in rules["ts-review"]["disabled_reason"]
    assert svc_env.stop() == 0
