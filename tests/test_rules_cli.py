"""`aiwgctl rules test/enable/disable` against the real service: what a person types, what they read."""

from __future__ import annotations

import json

from service_fixture import ServiceEnv

RULES = {
    "watch": {"paths": []}, "schedule": {"jobs": []},
    "rules": [
        {"id": "lint", "triggers": [{"type": "file.modify", "paths": ["src/**/*.py"]}],
         "conditions": [{"shell": "echo \"$AIWG_EVENT_PATH\" > checked.txt"}],
         "actions": [{"shell": "touch acted.txt"}]},
        {"id": "other", "triggers": [{"type": "file.create"}], "actions": [{"shell": "true"}]},
    ],
}


def enabled(env: ServiceEnv) -> dict[str, bool]:
    rules = env.call("automation.status")["rules"]
    return {r["id"]: r["enabled"] for r in rules}


def test_rules_test_is_a_dry_run(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config(RULES)
    svc_env.start()
    res = svc_env.ctl("rules", "test", "lint", "--event",
                      json.dumps({"type": "file.modify", "data": {"path": "src/a.py"}}), check=True)
    assert "triggered:  yes" in res.stdout and "would run:  yes" in res.stdout
    assert "condition:  shell: pass" in res.stdout and "action:   shell" in res.stdout
    assert (svc_env.project / "checked.txt").read_text() == "src/a.py\n"  # the condition really ran
    assert not (svc_env.project / "acted.txt").exists()  # the action never does
    miss = svc_env.ctl("rules", "test", "lint", "--event", json.dumps({"type": "file.modify",
                                                                       "data": {"path": "docs/a.md"}}), check=True)
    assert "triggered:  no" in miss.stdout and "would run:  no" in miss.stdout
    bad = svc_env.ctl("rules", "test", "lint", "--event", "{not json")
    assert bad.returncode != 0 and "--event is not valid JSON" in bad.stderr
    unknown = svc_env.ctl("rules", "test", "nope")
    assert unknown.returncode != 0 and "no rule 'nope'" in unknown.stderr


def test_rules_disable_and_enable_persist_across_a_restart(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config(RULES)
    svc_env.start()
    assert svc_env.ctl("rules", "disable", "lint", check=True).stdout.strip() == "lint: disabled"
    assert enabled(svc_env) == {"lint": False, "other": True}
    assert svc_env.stop() == 0
    svc_env.start()
    assert enabled(svc_env) == {"lint": False, "other": True}  # persisted
    out = svc_env.ctl("rules", "disable", check=True).stdout
    assert out.startswith("all rules (") and out.strip().endswith("disabled")
    assert enabled(svc_env) == {"lint": False, "other": False}
    svc_env.ctl("rules", "enable", check=True)
    assert enabled(svc_env) == {"lint": True, "other": True}
    as_json = json.loads(svc_env.ctl("rules", "disable", "other", "--json", check=True).stdout)
    assert as_json == {"ruleId": "other", "enabled": False}
