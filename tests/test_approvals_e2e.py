"""Approvals through the real service: a real file write parks a rule run; aiwgctl approves, rejects, lists;
a restart while pending keeps the approval; a second decision says who decided first."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from service_fixture import ServiceEnv, wait_for

WORKTREE = str(Path(__file__).resolve().parent.parent)

CONFIG = {
    "watch": {"paths": [{"path": "inbox/", "events": ["create", "modify"]}], "debounce_ms": 50},
    "schedule": {"jobs": []},
    "rules": [{"id": "ship", "triggers": [{"type": "file.*", "paths": ["inbox/*.req"]}],
               "actions": [{"approve": {"message": "ship {path}?", "timeout_minutes": 30}},
                           {"shell": "cp \"$AIWG_EVENT_PATH\" shipped.txt"}],
               "mode": "queued", "max": 5},
              {"id": "quick", "requires_approval": True, "triggers": [{"type": "file.*", "paths": ["inbox/*.quick"]}],
               "actions": [{"shell": "touch quick-ran"}]}],
}


def pending(env: ServiceEnv, rule: str = "ship") -> list[dict[str, object]]:
    return [a for a in env.call("approval.list", {})["approvals"] if a["rule_id"] == rule]


def test_approval_end_to_end_through_a_real_file(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["PYTHONPATH"] = os.pathsep.join(x for x in (WORKTREE, env.env.get("PYTHONPATH")) if x)
    env.write_project_config(CONFIG)
    (env.project / "inbox").mkdir()
    env.start()
    (env.project / "inbox" / "one.req").write_text("payload one\n")
    first = wait_for(lambda: pending(env), 15, what="a pending approval")[0]
    assert first["message"] == "ship inbox/one.req?" and first["rule_id"] == "ship"
    events = env.call("events.list", {"type": "gate.pending"})["events"]
    assert [e["data"]["id"] for e in events] == [first["id"]]

    listed = env.ctl("approvals", check=True).stdout
    assert first["id"] in listed and "ship inbox/one.req?" in listed
    assert not (env.project / "shipped.txt").exists()

    # restart while pending: the approval survives and is still decidable
    assert env.stop() == 0
    env.start()
    assert [a["id"] for a in pending(env)] == [first["id"]]
    out = env.ctl("approve", first["id"], check=True).stdout
    assert out.strip() == f"{first['id']}: approved (rule ship)"
    wait_for(lambda: (env.project / "shipped.txt").exists(), 15, what="the approved shell action")
    assert (env.project / "shipped.txt").read_text() == "payload one\n"

    again = env.ctl("reject", first["id"], "--reason", "too late")
    assert again.returncode == 1
    assert f"approval {first['id']} already approved by " in again.stderr and "(via cli)" in again.stderr
    unknown = env.ctl("approve", "ap-00000000")
    assert unknown.returncode == 1 and "no approval 'ap-00000000'" in unknown.stderr

    # reject: the run ends rejected, with the reason, who and how in the rule's trace
    (env.project / "inbox" / "two.req").write_text("payload two\n")
    second = wait_for(lambda: pending(env), 15, what="a second approval")[0]
    res = env.ctl("reject", second["id"], "--reason", "not this one", "--json", check=True)
    assert json.loads(res.stdout)["approval"]["state"] == "rejected"
    runs = wait_for(lambda: [r for r in env.call("automation.trace", {"ruleId": "ship"})["runs"]
                             if r["outcome"] == "rejected"], 10, what="the rejected run")
    full = env.call("automation.trace", {"ruleId": "ship", "runId": runs[0]["run_id"]})["run"]
    assert full["approval"]["decided_via"] == "cli" and full["approval"]["reason"] == "not this one"
    assert full["approval"]["decided_by"]  # the peer's user name, from SO_PEERCRED
    approved = next(r for r in env.call("automation.trace", {"ruleId": "ship"})["runs"] if r["outcome"] == "success")
    assert approved["run_id"] == first["run_id"]
    assert (env.project / "shipped.txt").read_text() == "payload one\n"
    everything = env.ctl("approvals", "--all", "--json", check=True).stdout
    assert {a["state"] for a in json.loads(everything)["approvals"]} == {"approved", "rejected"}

    # expiry: a requires_approval rule whose approval nobody decides ends `expired` (1 h by default; here the
    # row's deadline is moved to now through the real database, then a restart finds it overdue)
    (env.project / "inbox" / "x.quick").write_text("x")
    quick = wait_for(lambda: pending(env, "quick"), 15, what="the quick approval")[0]
    assert quick["message"] == "rule quick wants to run: shell 'touch quick-ran'"
    assert env.stop() == 0
    db = sqlite3.connect(env.state_dir / "approvals.db")
    with db:
        db.execute("UPDATE approvals SET expires_at = 0 WHERE id = ?", (quick["id"],))
    db.close()
    env.start()
    expired = wait_for(lambda: env.call("events.list", {"type": "gate.timeout"})["events"], 15, what="gate.timeout")
    assert expired[0]["data"]["id"] == quick["id"] and expired[0]["data"]["state"] == "expired"
    assert env.call("events.list", {"type": "approval.expired"})["events"][0]["data"]["decided_by"] == "timeout"
    runs = wait_for(lambda: env.call("automation.trace", {"ruleId": "quick"})["runs"], 10, what="the quick trace")
    assert runs[0]["outcome"] == "expired" and not (env.project / "quick-ran").exists()
    late = env.ctl("approve", quick["id"])
    assert late.returncode == 1 and "already expired" in late.stderr
    assert env.stop() == 0
