"""Issue 22, findings 5 and 6: an approval is bound to what it showed, and ``via`` comes from the channel.

The real service, a real file write parking a rule run, and decisions over the real socket.
"""

from __future__ import annotations

import json
from pathlib import Path

from service_fixture import ServiceEnv, wait_for


def config(action: str, approvers: list[str] | None = None) -> dict[str, object]:
    gate: dict[str, object] = {"message": "ship {path}?", "timeout_minutes": 30}
    if approvers:
        gate["approvers"] = approvers
    return {"watch": {"paths": [{"path": "inbox/", "events": ["create"]}], "debounce_ms": 0},
            "schedule": {"jobs": []},
            "rules": [{"id": "ship", "triggers": [{"type": "file.*", "paths": ["inbox/*.req"]}],
                       "actions": [{"approve": gate}, {"shell": action}]}]}


def pending(env: ServiceEnv) -> list[dict[str, object]]:
    return env.call("approval.list", {})["approvals"]


def test_via_is_the_socket_never_the_callers_word(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config(config("touch shipped", approvers=["telegram:111"]))
    (svc_env.project / "inbox").mkdir()
    svc_env.start()
    (svc_env.project / "inbox" / "a.req").write_text("x")
    ap = wait_for(lambda: pending(svc_env), 15, what="a pending approval")[0]
    c = svc_env.connect()
    try:
        reply = c.request("approval.approve", {"approvalId": ap["id"], "via": "telegram:111"})
    finally:
        c.close()
    assert reply["error"]["code"] == -32005 and "approvers: telegram:111" in reply["error"]["message"]
    assert pending(svc_env)[0]["state"] == "pending" and not (svc_env.project / "shipped").exists()


def test_an_edited_rule_cancels_its_pending_request_and_never_runs_the_new_actions(svc_env: ServiceEnv,
                                                                                   tmp_path: Path) -> None:
    evil = tmp_path / "EVIL"
    svc_env.write_project_config(config("touch shipped"))
    (svc_env.project / "inbox").mkdir()
    svc_env.start()
    (svc_env.project / "inbox" / "a.req").write_text("x")
    ap = wait_for(lambda: pending(svc_env), 15, what="a pending approval")[0]
    assert "touch shipped" in json.dumps(ap["actions"])
    assert len(ap["actions_sha256"]) == 64
    # the rule is edited (and re-trusted) after the request was shown
    svc_env.write_project_config(config(f"touch {evil}"))
    svc_env.ctl("reload", check=True)
    gone = wait_for(lambda: svc_env.call("events.list", {"type": "approval.cancelled"})["events"], 15,
                    what="the cancellation")
    assert gone[0]["data"]["approval_id"] == ap["id"] and "actions changed" in gone[0]["data"]["why"]
    res = svc_env.ctl("approve", ap["id"])
    assert res.returncode == 1 and "already rejected by service (via policy)" in res.stderr
    run = svc_env.call("automation.trace", {"ruleId": "ship", "project": str(svc_env.project)})["runs"][0]
    assert run["outcome"] == "rejected" and "actions changed" in run["reason"]
    assert not evil.exists() and not (svc_env.project / "shipped").exists()
    assert "approval " + ap["id"] + " cancelled" in svc_env.log_text()
    # an unchanged rule still works: a fresh request, approved, runs what it showed
    (svc_env.project / "inbox" / "b.req").write_text("x")
    ap2 = wait_for(lambda: [a for a in pending(svc_env) if a["id"] != ap["id"]], 15, what="a second request")[0]
    assert json.dumps(ap2["actions"]).count(str(evil)) == 1
    svc_env.ctl("approve", ap2["id"], check=True)
    wait_for(evil.exists, 15, what="the approved, shown action")
