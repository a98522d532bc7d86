"""Overrides persisted across engine restarts and reloads; traces in SQLite, capped; RPC; automation.test."""

from __future__ import annotations

from pathlib import Path

import pytest
from rules_support import Harness, parse, run

from aiwg_service.protocol import (
    INVALID_PARAMS,
    AutomationStatusParams,
    AutomationTestParams,
    AutomationTraceParams,
    RpcError,
    RuleIdParams,
)

RULES = [
    {"id": "a", "trigger": {"type": "go"}, "action": {"type": "agent", "prompt": "a"}},
    {"id": "b", "triggers": [{"type": "go"}], "actions": [{"agent": {"prompt": "b"}}]},
]


def test_enable_disable_persist_across_restart_and_reload(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start(RULES)
        assert eng.rpc_disable(RuleIdParams(ruleId="a")) == {"ruleId": "a", "enabled": False}
        with pytest.raises(RpcError) as exc:
            eng.rpc_enable(RuleIdParams(ruleId="nope"))
        assert exc.value.code == INVALID_PARAMS and exc.value.message == "Invalid params: ruleId: no rule 'nope'"
        assert exc.value.data == {"param": "ruleId"}
        h.publish("go")
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["b"]
        await eng.stop()

        # a new engine on the same state dir: still disabled; a reload keeps it so
        eng2 = await h.start(RULES, start_bus=False)
        st = {r["id"]: r for r in eng2.rpc_status(AutomationStatusParams())["rules"]}
        assert st["a"]["enabled"] is False and st["a"]["disabled_reason"].startswith("disabled by automation.disable")
        assert st["b"]["enabled"] is True
        eng2.set_project(h.root, parse(RULES))
        h.publish("go")
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["b", "b"]
        # omitting ruleId means every rule (the AIWG daemon's behaviour)
        res = eng2.rpc_disable(RuleIdParams())
        assert res["enabled"] is False and sorted(res["rules"]) == ["a", "b"]
        eng2.rpc_enable(RuleIdParams(ruleId="a", project=h.root))
        h.publish("go")
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["b", "b", "a"]
        # the config's enabled:false is the default until an override says otherwise
        eng2.set_project(h.root, parse([{**RULES[1], "enabled": False, "id": "c"}]))
        c = eng2.rpc_status(AutomationStatusParams(project=h.root))["rules"][0]
        assert c["enabled"] is False and c["disabled_reason"] == "disabled in config"
        await h.stop()

    run(body)


def test_reload_lifts_the_loop_guard_and_keeps_counters(tmp_path: Path) -> None:
    rule = {"id": "l", "triggers": [{"type": "go"}], "max_runs_per_minute": 2, "actions": [{"agent": {"prompt": "x"}}],
            "mode": "parallel"}

    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start([rule])
        for _ in range(4):
            h.publish("go")
        await h.idle()
        assert len(h.submitted) == 2 and h.state("l").disabled_until
        eng.set_project(h.root, parse([rule]))  # what apply() does on reload
        assert not h.state("l").disabled_until and h.state("l").runs == 2 and h.state("l").skipped == 2
        h.publish("go")
        await h.idle()
        assert len(h.submitted) == 3
        await h.stop()

    run(body)


def test_traces_carry_detail_and_are_capped_at_100(tmp_path: Path) -> None:
    rules = [
        {"id": "t", "triggers": [{"type": "file.modify", "paths": ["src/**"]}],
         "conditions": [{"shell": "echo checking $AIWG_EVENT_PATH; seq 1 100; exit 1", "expect": "fail"}],
         "actions": [{"agent": {"prompt": "fix {path}"}}, {"shell": "echo done"}]},
        # 150 triggers in a second: every triggered run counts for the loop guard now, so allow them
        {"id": "cap", "triggers": [{"type": "tick"}], "conditions": [{"match": {"field": "data.n", "equals": -1}}],
         "max_runs_per_minute": 600,
         "actions": [{"agent": {"prompt": "never"}}], "mode": "parallel"},
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start(rules)
        ev = h.publish("file.modify", {"path": "src/x.py"})
        for i in range(130):
            h.publish("tick", {"n": i})
        await h.idle()
        res = eng.rpc_trace(AutomationTraceParams(ruleId="t"))
        assert len(res["runs"]) == 1
        s = res["runs"][0]
        assert s["outcome"] == "success" and s["task_ids"] == ["task-0001"] and s["event_type"] == "file.modify"
        full = eng.rpc_trace(AutomationTraceParams(ruleId="t", runId=s["run_id"]))["run"]
        assert full["event"]["id"] == ev.id and full["event"]["data"] == {"path": "src/x.py"}
        cond = full["conditions"][0]
        assert cond["kind"] == "shell" and cond["exit"] == 1 and cond["ok"] is True and cond["duration_ms"] > 0
        out = cond["stdout"].splitlines()
        assert out[0] == "checking src/x.py" and len(out) == 21 and out[-1] == "..."  # first 20 lines kept
        assert [a["kind"] for a in full["actions"]] == ["agent", "shell"]
        assert full["actions"][0]["result"]["task_id"] == "task-0001"
        assert full["actions"][0]["result"]["prompt"] == "fix src/x.py"
        assert full["actions"][1]["result"]["stdout"] == "done" and full["duration_ms"] >= 0
        assert full["started"] <= full["finished"]
        # 130 runs, 100 kept; the newest first
        assert eng.store.count(h.root, "cap") == 100
        capped = eng.rpc_trace(AutomationTraceParams(ruleId="cap", limit=1000))["runs"]
        assert len(capped) == 100 and all(r["outcome"] == "condition_failed" for r in capped)
        newest = eng.rpc_trace(AutomationTraceParams(ruleId="cap", runId=capped[0]["run_id"]))["run"]
        assert newest["event"]["data"] == {"n": 129}
        with pytest.raises(RpcError):
            eng.rpc_trace(AutomationTraceParams(ruleId="cap", runId="run-nope"))
        await h.stop()
        # traces survive a restart
        eng2 = await h.start(rules, start_bus=False)
        assert len(eng2.rpc_trace(AutomationTraceParams(ruleId="cap", limit=5))["runs"]) == 5
        await eng2.stop()

    run(body)


def test_automation_test_runs_conditions_but_never_acts(tmp_path: Path) -> None:
    rules = [{"id": "lint-fix", "triggers": [{"type": "file.modify", "paths": ["src/**/*.py"]}],
              "conditions": [{"shell": "touch condition-ran; exit 1", "expect": "fail"}],
              "actions": [{"agent": {"prompt": "Fix the lint errors in {paths}"}}, {"shell": "touch acted"},
                          {"emit": {"type": "x.y"}}, {"notify": {"message": "m {path}"}}]}]

    async def body() -> None:
        h = Harness(tmp_path)
        eng = await h.start(rules)
        res = await eng.rpc_test(AutomationTestParams(ruleId="lint-fix",
                                                      event={"type": "file.modify", "data": {"path": "src/a/b.py"}}))
        assert res["triggered"] is True and res["conditions_passed"] is True and res["would_run"] is True
        assert res["conditions"][0]["exit"] == 1
        assert res["actions"][0] == {"kind": "agent", "prompt": "Fix the lint errors in src/a/b.py", "agent": None,
                                     "priority": 0}
        assert (h.project / "condition-ran").exists()
        # synthetic event from the first trigger; a non-matching event says so
        syn = await eng.rpc_test(AutomationTestParams(ruleId="lint-fix"))
        assert syn["triggered"] is True and syn["event"]["type"] == "file.modify"
        miss = await eng.rpc_test(AutomationTestParams(ruleId="lint-fix", event={"type": "file.modify",
                                                                                  "payload": {"path": "lib/x.py"}}))
        assert miss["triggered"] is False and miss["would_run"] is False
        eng.rpc_disable(RuleIdParams(ruleId="lint-fix"))
        off = await eng.rpc_test(AutomationTestParams(ruleId="lint-fix"))
        assert off["would_run"] is False and off["blocked_by"]
        await h.idle()
        assert not (h.project / "acted").exists() and h.submitted == []
        assert not h.of_type("x.y") and not h.of_type("notify.request")
        assert eng.store.count(h.root, "lint-fix") == 0 and h.state("lint-fix") is None
        with pytest.raises(RpcError):
            await eng.rpc_test(AutomationTestParams(ruleId="nope"))
        await h.stop()

    run(body)
