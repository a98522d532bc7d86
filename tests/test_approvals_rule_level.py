"""Rule-level ``requires_approval``, case by case (the engine, bus and SQLite are real): the gate comes after the
conditions and before every action; approving runs all of them in order; a failed condition asks nobody; an
``approve`` action inside such a rule is a second gate. (The AIWG form's ``requiresApproval`` is in
test_approvals.py.)"""

from __future__ import annotations

from pathlib import Path

from rules_support import Harness, run


def rule(**extra: object) -> dict[str, object]:
    return {"id": "gated", "requires_approval": True, "triggers": [{"type": "go"}],
            "actions": [{"shell": "echo one >> order"}, {"shell": "echo two >> order"}], **extra}


def test_approving_runs_every_action_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start([rule()])
        eng.arm_approvals()
        h.publish("go")
        req = await h.until(lambda: h.of_type("approval.requested"), what="the approval")
        await h.idle()
        assert not (h.project / "order").exists()  # nothing ran before the decision
        assert [a["kind"] for a in req[0].data["actions"]] == ["shell", "shell"]
        eng.approvals.decide(req[0].data["id"], True, "alice", "cli")
        await h.until(lambda: (h.project / "order").exists() and
                      (h.project / "order").read_text() == "one\ntwo\n", what="both actions, in order")
        await h.idle()
        assert h.runs("gated")[0]["outcome"] == "success"
        await h.stop()

    run(body)


def test_a_failed_condition_asks_nobody(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([rule(conditions=[{"shell": "exit 1"}])])
        h.publish("go")
        await h.until(lambda: h.runs("gated"), what="the run's trace")
        await h.idle()
        assert h.runs("gated")[0]["outcome"] == "condition_failed"
        assert h.of_type("approval.requested") == []
        await h.stop()

    run(body)


def test_an_approve_action_in_a_gated_rule_is_a_second_gate(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start([{"id": "gated", "requires_approval": True, "triggers": [{"type": "go"}],
                              "actions": [{"shell": "echo one >> order"}, {"approve": {"message": "and two?"}},
                                          {"shell": "echo two >> order"}]}])
        eng.arm_approvals()
        h.publish("go")
        first = await h.until(lambda: h.of_type("approval.requested"), what="the rule's approval")
        eng.approvals.decide(first[0].data["id"], True, "alice", "cli")
        second = await h.until(lambda: len(h.of_type("approval.requested")) == 2 and h.of_type("approval.requested"),
                               what="the action's approval")
        await h.idle()
        assert (h.project / "order").read_text() == "one\n"  # stopped at the second gate
        assert second[1].data["message"] == "and two?"
        eng.approvals.decide(second[1].data["id"], True, "bob", "cli")
        await h.until(lambda: (h.project / "order").read_text() == "one\ntwo\n", what="the rest after the second")
        await h.stop()

    run(body)
