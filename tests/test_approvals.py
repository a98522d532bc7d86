"""Approval gates on the real engine, bus and SQLite: approve, reject, expiry, restart, decide-once, approvers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from rules_support import Harness, config_errors, run

from aiwg_service.protocol import (
    ALREADY_DECIDED,
    INVALID_PARAMS,
    NOT_ALLOWED,
    ApprovalDecideParams,
    ApprovalListParams,
    RpcError,
)
from aiwg_service.rules.approvals import ApprovalAlreadyDecided, ApprovalNotAllowed, ApprovalNotFound


def gated(**approve: object) -> list[dict[str, object]]:
    return [{"id": "deploy", "triggers": [{"type": "go"}],
             "actions": [{"notify": {"message": "about to deploy {{data.ref}}"}},
                         {"approve": {"message": "deploy {{data.ref}}?", **approve}},
                         {"agent": {"prompt": "deploy {{data.ref}}"}}, {"shell": "touch deployed"}]}]


def test_approve_runs_the_rest_with_the_original_event(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start(gated())
        eng.arm_approvals()
        h.publish("go", {"ref": "v1.2"})
        req = await h.until(lambda: h.of_type("approval.requested"), what="approval.requested")
        gate = await h.until(lambda: h.of_type("gate.pending"), what="gate.pending")
        ap = req[0].data
        assert gate[0].data["id"] == ap["id"] == ap["approval_id"] and ap["id"].startswith("ap-")
        assert ap["message"] == "deploy v1.2?" and ap["rule_id"] == "deploy" and ap["state"] == "pending"
        assert [a["kind"] for a in ap["actions"]] == ["agent", "shell"] and ap["actions"][0]["prompt"] == "deploy v1.2"
        assert ap["event"]["data"] == {"ref": "v1.2"} and ap["expires"] > ap["requested"]
        await h.idle()
        assert h.submitted == [] and not (h.project / "deployed").exists()
        assert len(h.of_type("notify.request")) == 1  # the actions before the gate ran once
        parked = h.runs("deploy")[0]
        assert parked["outcome"] == "pending_approval" and ap["id"] in parked["reason"]
        st = eng.rpc_status(__import__("aiwg_service.protocol", fromlist=["x"]).AutomationStatusParams())
        assert st["rules"][0]["pending_approvals"] == [ap["id"]]
        listed = eng.rpc_approval_list(ApprovalListParams())["approvals"]
        assert [a["id"] for a in listed] == [ap["id"]]

        out = eng.approvals.decide(ap["id"], True, "alice", "telegram", "looks good")
        assert out["state"] == "approved" and out["decided_by"] == "alice" and out["decided_via"] == "telegram"
        await h.until(lambda: (h.project / "deployed").exists(), what="the shell action after approval")
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["deploy v1.2"]
        origin = h.submitted[0]["origin"]
        assert origin["approval_id"] == ap["id"] and origin["run_id"] == ap["run_id"]
        assert len(h.of_type("notify.request")) == 1  # not re-run
        assert [e.data["id"] for e in h.of_type("approval.approved")] == [ap["id"]]
        assert [e.data["decided_by"] for e in h.of_type("gate.approved")] == ["alice"]
        # one trace for the run: the gate, who decided and how, then the rest of the actions
        runs = h.runs("deploy")
        assert len(runs) == 1 and runs[0]["outcome"] == "success" and runs[0]["task_ids"] == ["task-0001"]
        full = eng.store.run(h.root, "deploy", ap["run_id"])
        assert full["approval"]["state"] == "approved" and full["approval"]["decided_by"] == "alice"
        assert full["approval"]["decided_via"] == "telegram" and full["approval"]["reason"] == "looks good"
        assert [a["kind"] for a in full["actions"]] == ["notify", "approve", "agent", "shell"]
        assert full["actions"][1]["ok"] is True and full["actions"][1]["result"]["by"] == "alice"

        # decide once: a second decision names who decided first
        with pytest.raises(ApprovalAlreadyDecided, match=r"already approved by alice \(via telegram\)"):
            eng.approvals.decide(ap["id"], False, "bob", "cli")
        with pytest.raises(RpcError) as exc:
            eng._rpc_decide(ApprovalDecideParams(approvalId=ap["id"]), None, True)
        assert exc.value.code == ALREADY_DECIDED and "already approved by alice" in exc.value.message
        with pytest.raises(ApprovalNotFound):
            eng.approvals.decide("ap-nope", True, "alice", "cli")
        with pytest.raises(RpcError) as exc:
            eng._rpc_decide(ApprovalDecideParams(approvalId="ap-nope"), None, True)
        assert exc.value.code == INVALID_PARAMS and exc.value.data == {"param": "approvalId"}
        mode = stat.S_IMODE(os.stat(h.state_dir / "approvals.db").st_mode)
        assert mode == 0o600
        await h.stop()

    run(body)


def test_reject_ends_the_run_and_single_mode_skips_while_pending(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start([{"id": "r", "requiresApproval": True, "trigger": {"type": "go"},
                              "action": {"type": "agent", "prompt": "p"}},
                             {"id": "s", "requires_approval": True, "triggers": [{"type": "go"}],
                              "actions": [{"shell": "touch s-ran"}]}])
        eng.arm_approvals()
        h.publish("go")
        await h.until(lambda: len(h.of_type("approval.requested")) == 2, what="two approvals")
        await h.idle()
        by_rule = {e.data["rule_id"]: e.data for e in h.of_type("approval.requested")}
        assert by_rule["r"]["message"] == "rule r wants to run: agent 'p'"
        h.publish("go")  # rule s is mode single: skipped while its approval is pending
        await h.idle()
        s_runs = h.runs("s")
        assert s_runs[0]["outcome"] == "skipped" and by_rule["s"]["id"] in s_runs[0]["reason"]
        assert len(h.runs("r")) == 2  # the AIWG form runs in parallel mode: a second approval
        res = eng._rpc_decide(ApprovalDecideParams(approvalId=by_rule["s"]["id"], reason="not today"), None, False)
        assert res["approval"]["state"] == "rejected" and res["approval"]["decided_by"] == "local"
        await h.idle()
        assert not (h.project / "s-ran").exists()
        last = h.runs("s")
        assert [r["outcome"] for r in last][:1] == ["rejected"]
        assert "rejected by local via cli: not today" in last[0]["reason"]
        assert [e.data["reason"] for e in h.of_type("gate.rejected")] == ["not today"]
        assert eng.rpc_approval_list(ApprovalListParams(state="rejected"))["approvals"][0]["id"] == by_rule["s"]["id"]
        await h.stop()

    run(body)


def test_expiry_and_restart_while_pending(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        rules = [*gated(timeout_minutes=0.01),
                 {"id": "later", "triggers": [{"type": "later"}],
                  "actions": [{"approve": {}}, {"shell": "touch later-ran"}]}]
        eng = await h.start(rules)
        eng.arm_approvals()
        h.publish("later")
        h.publish("go", {"ref": "x"})
        exp = await h.until(lambda: h.of_type("approval.expired"), timeout=15, what="approval.expired")
        assert exp[0].data["rule_id"] == "deploy" and exp[0].data["decided_by"] == "timeout"
        assert h.of_type("gate.timeout")[0].data["id"] == exp[0].data["id"]
        await h.idle()
        assert h.runs("deploy")[0]["outcome"] == "expired" and h.submitted == []
        with pytest.raises(ApprovalAlreadyDecided, match="already expired"):
            eng.approvals.decide(exp[0].data["id"], True, "alice", "cli")
        later_id = h.of_type("approval.requested")[0].data["id"]
        await eng.stop()

        # a new engine on the same state: the pending approval is still there and can be approved
        eng2 = await h.start(rules, start_bus=False)
        eng2.arm_approvals()
        pending = eng2.approvals.list()
        assert [a["id"] for a in pending] == [later_id]
        eng2.approvals.decide(later_id, True, "bob", "cli")
        await h.until(lambda: (h.project / "later-ran").exists(), what="the action approved after a restart")
        await h.idle()
        assert h.runs("later")[0]["outcome"] == "success"
        await h.stop()

    run(body)


def test_approvers_and_timeout_approve(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start([{"id": "a", "triggers": [{"type": "go"}],
                              "actions": [{"approve": {"approvers": ["telegram:42"]}}, {"shell": "touch a"}]},
                             {"id": "b", "triggers": [{"type": "go"}], "actions": [
                                 {"approve": {"timeout_minutes": 0.005, "on_timeout": "approve"}},
                                 {"shell": "touch b"}]}])
        eng.arm_approvals()
        h.publish("go")
        await h.until(lambda: len(h.of_type("approval.requested")) == 2, what="two approvals")
        a_id = next(e.data["id"] for e in h.of_type("approval.requested") if e.data["rule_id"] == "a")
        with pytest.raises(ApprovalNotAllowed, match="telegram:7 may not decide"):
            eng.approvals.decide(a_id, True, "telegram:7", "telegram")
        with pytest.raises(RpcError) as exc:  # the socket is "cli", whatever the caller claims
            eng._rpc_decide(ApprovalDecideParams(approvalId=a_id, via="telegram:42"), None, True)
        assert exc.value.code == NOT_ALLOWED
        eng.approvals.decide(a_id, True, "telegram:42", "telegram")  # as the bridge decides for that user
        await h.until(lambda: (h.project / "a").exists() and (h.project / "b").exists(), timeout=15,
                      what="both actions")
        await h.idle()
        assert h.runs("b")[0]["outcome"] == "success"
        assert h.of_type("approval.expired")[0].data["rule_id"] == "b"
        await h.stop()

    run(body)


def test_approve_action_schema_errors() -> None:
    errs = config_errors({"rules": [{"id": "x", "triggers": [{"type": "go"}], "actions": [
        {"approve": {"timeout_minutes": 0, "on_timeout": "maybe", "approvers": "bob", "colour": 1}}]}]})
    text = "\n".join(errs)
    assert "rules[0] (x): actions[0].approve.timeout_minutes: 0 must be > 0" in text
    assert 'actions[0].approve.on_timeout: "maybe" is not one of reject, approve' in text
    assert "actions[0].approve.approvers: must be a list of names" in text
    assert "actions[0].approve.colour: unknown key in an approve action" in text
    assert config_errors({"rules": [{"id": "y", "requires_approval": "yes", "triggers": [{"type": "go"}],
                                     "actions": [{"shell": "true"}]}]}) == [
        '.aiwg/daemon.json: rules[0] (y): requires_approval: must be a boolean, not "yes"']
