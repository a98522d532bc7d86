"""One linked record: a file write fires a rule whose agent task fails; its ``task.failed`` fires another
rule whose task completes.  ``trace.get`` / ``aiwgctl trace`` from any id in the chain show the whole
tree: event, rule run with its condition results, task with session and cost, the event it caused, and
what that fired."""

from __future__ import annotations

import json

from service_fixture import ServiceEnv, wait_for

from tests.test_rules_e2e import _start_with_fake_claude

CFG = {
    "watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["modify"]}]},
    "schedule": {"jobs": []},
    "rules": [
        {"id": "review", "triggers": [{"type": "file.modify", "paths": ["src/*.py"]}],
         "conditions": [{"shell": "exit 0"}], "actions": [{"agent": {"prompt": "fail review {paths}"}}]},
        {"id": "on-fail", "triggers": [{"type": "task.failed"}], "actions": [{"agent": {"prompt": "fix it"}}]},
    ],
}


def test_rule_chain_trace(svc_env: ServiceEnv) -> None:
    (svc_env.project / "src").mkdir()
    (svc_env.project / "src" / "a.py").write_text("x = 0\n")
    _start_with_fake_claude(svc_env, CFG)
    (svc_env.project / "src" / "a.py").write_text("x = 1\n")

    def two_done() -> list[dict] | None:
        ts = svc_env.call("task.list", {"source": "rule"})
        return ts if len(ts) == 2 and all(t["state"] in ("failed", "completed") for t in ts) else None

    second, first = wait_for(two_done, 30, what="both rule tasks to finish")
    assert first["state"] == "failed" and second["state"] == "completed"
    assert first["origin"]["rule_id"] == "review" and first["origin"]["event_id"].startswith("ev-")
    for ident in (first["id"], second["id"], first["origin"]["run_id"], first["origin"]["event_id"]):
        tr = svc_env.call("trace.get", {"id": ident})
        root = tr["root"]
        assert root["kind"] == "event" and root["type"] == "file.modify" and root["id"] == first["origin"]["event_id"]
        (run,) = root["children"]
        assert run["kind"] == "rule_run" and run["rule"] == "review" and run["outcome"] == "success"
        assert run["conditions"][0]["kind"] == "shell" and run["conditions"][0]["ok"] is True, run["conditions"]
        (t1,) = run["children"]
        assert t1["kind"] == "task" and t1["id"] == first["id"] and t1["state"] == "failed"
        assert t1["cost_usd"] == 0.0123 and t1["session_id"]
        (failed_ev,) = t1["children"]
        assert failed_ev["type"] == "task.failed"
        (run2,) = failed_ev["children"]
        assert run2["rule"] == "on-fail"
        (t2,) = run2["children"]
        assert t2["id"] == second["id"] and t2["state"] == "completed" and t2["cost_usd"] == 0.0123
        assert tr["total_cost_usd"] == 0.0246
    out = svc_env.ctl("trace", second["id"], check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"event {first['origin']['event_id']} file.modify")
    # the renderer reads what the trace stores: the shell condition that passed shows as passed
    (review,) = [ln for ln in lines if "rule review run" in ln]
    assert review.endswith("success [shell=ok]"), review
    assert any(f"task {first['id']}" in ln and "failed $0.0123" in ln for ln in lines)
    assert any(f"task {second['id']}" in ln and "completed $0.0123" in ln for ln in lines)
    assert lines[-1] == "total cost $0.0246"
    js = json.loads(svc_env.ctl("trace", first["id"], "--json", check=True).stdout)
    assert js["root"]["id"] == first["origin"]["event_id"]
    bad = svc_env.connect().request("trace.get", {"id": "t-nope"})
    assert bad["error"]["code"] == -32602 and "nothing known" in bad["error"]["message"]


def test_trace_starts_from_an_approval_and_a_webhook_delivery(svc_env: ServiceEnv) -> None:
    import uuid

    from webhook_support import SECRETS, free_port, post, token_headers

    port = free_port()
    svc_env.env.update(SECRETS)
    cfg = svc_env.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    # a project's hook takes its secret only from a variable the service-wide file names (the gate, issue 22)
    cfg.write_text(json.dumps({"webhook": {"port": port, "secret_vars": ["AIWG_TEST_TOK"]}}))
    svc_env.write_project_config({
        "watch": {"paths": []}, "schedule": {"jobs": []},
        "webhook": {"hooks": [{"id": "tok", "kind": "token", "secret_env": "AIWG_TEST_TOK"}]},
        "rules": [{"id": "deploy", "triggers": [{"type": "webhook.tok"}],
                   "actions": [{"approve": {"message": "deploy?"}}, {"shell": "touch deployed"}]}]})
    svc_env.start()
    wait_for(lambda: svc_env.call("daemon.status")["subsystems"]["webhooks"].get("listening"), 15,
             what="the webhook listener")
    delivery = str(uuid.uuid4())
    body = b'{"ref": "main"}'
    assert post(port, "/hooks/tok", body, token_headers(SECRETS["AIWG_TEST_TOK"], body, delivery))[0] == 202
    (approval,) = wait_for(lambda: svc_env.call("approval.list", {})["approvals"], 15, what="the approval")
    for ident in (approval["id"], delivery):
        tr = svc_env.call("trace.get", {"id": ident})
        assert tr is not None, ident
        root = tr["root"]
        assert root["kind"] == "event" and root["type"] == "webhook.tok", (ident, root)
        (run,) = root["children"]
        assert run["kind"] == "rule_run" and run["rule"] == "deploy" and run["approval"], run
    out = svc_env.ctl("trace", approval["id"])
    assert out.returncode == 0 and "rule deploy run" in out.stdout and "nothing known" not in out.stdout
