"""Run modes under a burst of 20 triggers, cooldown, and the loop guard; real subprocesses throughout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rules_support import Harness, alive, run

BURST = 20


def test_single_runs_once_while_in_flight(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "r", "triggers": [{"type": "go"}], "mode": "single",
                        "actions": [{"shell": "sleep 0.3; echo x >> runs.txt"}]}])
        for _ in range(BURST):
            h.publish("go")
        await h.idle()
        assert (h.project / "runs.txt").read_text() == "x\n"
        assert h.outcomes("r") == {"success": 1, "skipped": BURST - 1}
        assert all(r["reason"] == "already running (mode single)" for r in h.runs("r") if r["outcome"] == "skipped")
        st = h.state("r")
        assert st.runs == 1 and st.skipped == BURST - 1
        await h.stop()

    run(body)


def test_queued_runs_one_after_another_up_to_max(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "r", "triggers": [{"type": "go"}], "mode": "queued", "max": 5,
                        "actions": [{"shell": "echo start >> log.txt; sleep 0.05; echo end >> log.txt"}]}])
        for _ in range(BURST):
            h.publish("go")
        await h.until(lambda: h.state("r") and len(h.state("r").queue) == 4, what="4 queued")
        await h.idle()
        lines = (h.project / "log.txt").read_text().split()
        assert lines == ["start", "end"] * 5, lines  # never overlapping
        assert h.outcomes("r") == {"success": 5, "skipped": BURST - 5}
        assert any(r["reason"] == "queue full (mode queued, max 5)" for r in h.runs("r"))
        await h.stop()

    run(body)


def test_restart_cancels_the_running_one_and_kills_its_child(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "r", "triggers": [{"type": "go"}], "mode": "restart",
                        "actions": [{"shell": "sleep 30 & echo $! >> pids.txt; wait"}]}])
        pids = h.project / "pids.txt"
        h.publish("go")
        await h.until(lambda: pids.exists() and pids.read_text().strip(), what="the first run's child")
        first = int(pids.read_text().split()[0])
        assert alive(first)
        for _ in range(BURST - 1):
            h.publish("go")
        await h.until(lambda: not alive(first), timeout=20, what="the first run's sleep to be killed")
        await h.until(lambda: h.state("r").runs >= BURST - 1, what="the burst to be processed")
        # the last one is still running its own sleep 30; everything before it was cancelled
        runs = h.runs("r")
        assert sum(r["outcome"] == "cancelled" for r in runs) == BURST - 1
        first_run = min(runs, key=lambda r: r["run_id"])
        full = h.engine.store.run(h.root, "r", first_run["run_id"])
        assert full["reason"] == "restarted by a newer trigger (mode restart)"
        assert full["actions"][0]["error"] == "cancelled"
        assert len(h.state("r").running) == 1
        last_pids = [int(x) for x in pids.read_text().split()]
        await h.stop()  # stopping cancels the last run and kills its child too
        await h.until(lambda: not any(alive(x) for x in last_pids), timeout=5, what="all children gone")

    run(body)


def test_parallel_runs_concurrently_up_to_max(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "r", "triggers": [{"type": "go"}], "mode": "parallel", "max": 3,
                        "actions": [{"shell": "echo s >> c.txt; sleep 0.4"}]}])
        t0 = time.monotonic()
        for _ in range(BURST):
            h.publish("go")
        await h.until(lambda: h.state("r") and len(h.state("r").running) == 3, what="3 in flight")
        await h.until(lambda: (h.project / "c.txt").exists() and len((h.project / "c.txt").read_text().split()) == 3,
                      what="3 concurrent children")
        assert len(h.state("r").running) == 3  # observed concurrency == max
        await h.idle()
        assert time.monotonic() - t0 < 1.2, "three 0.4 s runs must overlap"
        assert h.outcomes("r") == {"success": 3, "skipped": BURST - 3}
        await h.stop()

    run(body)


def test_cooldown(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "r", "triggers": [{"type": "go"}], "mode": "parallel", "cooldown_seconds": 0.5,
                        "actions": [{"agent": {"prompt": "p"}}]},
                       {"id": "aiwg", "trigger": {"type": "go"}, "cooldownMs": 500,
                        "action": {"type": "agent", "prompt": "a"}}])
        for _ in range(5):
            h.publish("go")
        await h.idle()
        assert sorted(s["prompt"] for s in h.submitted) == ["a", "p"]
        assert h.outcomes("r") == {"success": 1, "skipped": 4}
        assert all(r["reason"].startswith("cooldown:") for r in h.runs("r") if r["outcome"] == "skipped")
        await asyncio.sleep(0.6)
        h.publish("go")
        await h.idle()
        assert sorted(s["prompt"] for s in h.submitted) == ["a", "a", "p", "p"]
        await h.stop()

    run(body)


def test_own_emitted_events_do_not_retrigger_by_default(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "echo", "triggers": [{"type": "file.modify"}],
                        "actions": [{"emit": {"type": "file.modify", "data": {"path": "{path}"}}}]}])
        h.publish("file.modify", {"path": "a.py"})
        await h.idle()
        await asyncio.sleep(0.1)
        assert h.state("echo").runs == 1 and len(h.of_type("file.modify")) == 2
        await h.stop()

    run(body)


def test_loop_guard_stops_a_rule_that_retriggers_itself(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([
            {"id": "self-loop", "triggers": [{"type": "file.modify", "paths": ["gen/**"]}],
             "ignore_own_events": False, "max_runs_per_minute": 5,
             "actions": [{"shell": "echo x >> gen.log"}, {"emit": {"type": "file.modify", "data": {"path": "gen/a"}}}]},
            # two rules ping-ponging: ignore_own_events cannot see this loop, the guard does
            {"id": "ping", "triggers": [{"type": "x.ping"}], "max_runs_per_minute": 8,
             "actions": [{"emit": {"type": "x.pong"}}]},
            {"id": "pong", "triggers": [{"type": "x.pong"}], "max_runs_per_minute": 600,
             "actions": [{"emit": {"type": "x.ping"}}]},
        ], extra={"automation": {"max_chain_depth": 20}})  # the loop guard, not the chain cap, is under test
        h.publish("file.modify", {"path": "gen/a"})
        h.publish("x.ping")
        await h.until(lambda: len(h.of_type("automation.loop_detected")) == 2, what="two loop detections")
        await h.idle()
        await asyncio.sleep(0.2)
        assert (h.project / "gen.log").read_text().count("x") == 5  # 5 runs acted, the 6th was stopped
        st = h.state("self-loop")
        assert st.runs == 5 and st.disabled_until > time.monotonic()
        det = {e.data["rule_id"]: e.data for e in h.of_type("automation.loop_detected")}
        assert det["self-loop"]["runs"] == 6 and det["self-loop"]["max_runs_per_minute"] == 5
        assert "ping" in det
        stopped = [r for r in h.runs("self-loop") if r["outcome"] == "skipped"]
        assert len(stopped) == 1 and stopped[0]["reason"].startswith("loop guard: 6 runs within 60s")
        status = {r["id"]: r for r in h.engine.rpc_status(_status())["rules"]}
        assert status["self-loop"]["enabled"] is False
        assert status["self-loop"]["disabled_reason"].startswith("loop guard")
        # automation.enable lifts it (a reload does too: test_rules_state)
        from aiwg_service.protocol import RuleIdParams

        h.engine.rpc_enable(RuleIdParams(ruleId="self-loop"))
        assert h.engine.rule_status(h.engine.rules[h.root]["self-loop"])["enabled"] is True
        h.engine.rpc_disable(RuleIdParams(ruleId="self-loop"))
        await h.stop()

    run(body)


def _status():  # type: ignore[no-untyped-def]
    from aiwg_service.protocol import AutomationStatusParams

    return AutomationStatusParams()
