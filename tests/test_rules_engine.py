"""The engine with a real bus, real subprocesses and real SQLite: forms, triggers, conditions, actions."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from rules_support import Harness, run

from aiwg_service.rules.conditions import WEEKDAYS


def test_aiwg_rule_works_unchanged(tmp_path: Path) -> None:
    """Pattern regex over type:source, payload.* operators, {{payload.path}} templates, agent action."""
    rule = {
        "id": "ts-review",
        "trigger": {"type": "file.modify", "pattern": "^file\\.modify:watch$"},
        "conditions": [{"field": "payload.path", "operator": "matches", "value": "\\.ts$"},
                       {"field": "payload.size", "operator": "gt", "value": 10},
                       {"field": "payload.path", "operator": "not_equals", "value": "src/skip.ts"},
                       {"field": "data.tag", "operator": "exists"},
                       {"field": "payload.nothing", "operator": "not_exists"},
                       {"field": "source", "operator": "eq", "value": "watch"}],
        "action": {"type": "agent", "prompt": "Review {{payload.path}} ({{data.size}} bytes)", "agent": "reviewer",
                   "priority": "high"},
    }

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([rule])
        h.publish("file.modify", {"path": "src/a.ts", "size": 20, "tag": 1})       # fires
        h.publish("file.modify", {"path": "src/a.js", "size": 20, "tag": 1})       # matches fails
        h.publish("file.modify", {"path": "src/b.ts", "size": 5, "tag": 1})        # gt fails
        h.publish("file.modify", {"path": "src/skip.ts", "size": 50, "tag": 1})    # neq fails
        h.publish("file.modify", {"path": "src/c.ts", "size": 50})                 # exists fails
        h.publish("file.modify", {"path": "src/d.ts", "size": 50, "tag": 1}, source="cli")  # pattern fails
        h.publish("file.create", {"path": "src/e.ts", "size": 50, "tag": 1})       # type fails
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["Review src/a.ts (20 bytes)"]
        s = h.submitted[0]
        assert s["agent"] == "reviewer" and s["priority"] == 10 and s["source"] == "rule"
        assert s["origin"]["rule_id"] == "ts-review" and s["origin"]["event_type"] == "file.modify"
        assert h.outcomes("ts-review") == {"success": 1, "condition_failed": 4}  # no trace without a trigger
        ok = [r for r in h.runs("ts-review") if r["outcome"] == "success"]
        assert ok[0]["task_ids"] == ["task-0001"] and ok[0]["event_path"] == "src/a.ts"
        await h.stop()

    run(body)


def test_aiwg_notify_and_webhook_actions(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/hook"

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([
            {"id": "tell", "trigger": {"type": "task.failed"},
             "action": {"type": "notify", "message": "task {{payload.task_id}} failed", "channel": "ops"}},
            {"id": "hook", "trigger": {"type": "task.failed"},
             "action": {"type": "webhook", "url": url, "message": "failed: {{payload.task_id}}"}},
            {"id": "bad-hook", "trigger": {"type": "task.failed"},
             "action": {"type": "webhook", "url": url.replace(str(srv.server_port), "1")}},
        ])
        h.publish("task.failed", {"task_id": "task-0042"}, source="supervisor")
        await h.idle()
        notes = h.of_type("notify.request")
        assert len(notes) == 1 and notes[0].data["message"] == "task task-0042 failed"
        assert notes[0].data["channel"] == "ops" and notes[0].data["rule_id"] == "tell"
        assert len(got) == 1 and got[0]["message"] == "failed: task-0042" and got[0]["event"]["type"] == "task.failed"
        hook = h.runs("hook")[0]
        assert hook["outcome"] == "success"
        full = h.engine.store.run(h.root, "hook", hook["run_id"])
        assert full["actions"][0]["result"]["status"] == 204
        assert h.runs("bad-hook")[0]["outcome"] == "error"
        await h.stop()

    try:
        run(body)
    finally:
        srv.shutdown()


def test_rich_triggers_paths_batch_data_and_jobs(tmp_path: Path) -> None:
    rules = [
        {"id": "py", "triggers": [{"type": "file.*", "paths": ["src/**/*.py"]}],
         "actions": [{"agent": {"prompt": "{type} {path} [{paths}] in {project}"}}], "mode": "parallel", "max": 50},
        {"id": "batch", "triggers": [{"type": "file.batch", "paths": ["docs/*.md"]}],
         "actions": [{"agent": {"prompt": "docs: {paths}"}}]},
        {"id": "agent-fail", "triggers": [{"type": "task.failed", "agent": "coder", "data": {"exit": 2}}],
         "actions": [{"agent": {"prompt": "task {{data.task_id}} failed"}}]},
        {"id": "nightly", "triggers": [{"type": "cron.fired", "job_id": "nightly", "source": "cron"}],
         "actions": [{"agent": {"prompt": "nightly"}}]},
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start(rules)
        h.publish("file.modify", {"path": "src/pkg/a.py"})
        h.publish("file.create", {"path": f"{h.root}/src/b.py"})  # absolute paths are made relative
        h.publish("file.modify", {"path": "lib/a.py"})
        h.publish("file.modify", {"path": "src/a.txt"})
        h.publish("file.batch", {"paths": ["src/x.txt", "docs/guide.md", "docs/api.md"]})
        h.publish("file.batch", {"paths": ["src/x.txt"]})
        h.publish("task.failed", {"agent": "coder", "exit": 2, "task_id": "t1"})
        h.publish("task.failed", {"agent": "coder", "exit": 1, "task_id": "t2"})
        h.publish("task.failed", {"agent": "writer", "exit": 2, "task_id": "t3"})
        h.bus.publish("cron.fired", h.root, {"job_id": "nightly"}, source="cron")
        h.bus.publish("cron.fired", h.root, {"job_id": "other"}, source="cron")
        await h.idle()
        prompts = sorted(s["prompt"] for s in h.submitted)
        assert prompts == sorted([
            f"file.modify src/pkg/a.py [src/pkg/a.py] in {h.root}",
            f"file.create src/b.py [src/b.py] in {h.root}",
            "docs: src/x.txt docs/guide.md docs/api.md",
            "task t1 failed",
            "nightly",
        ])
        await h.stop()

    run(body)


def _hours_around_now(inside: bool) -> str:
    now = datetime.now(UTC)
    m = now.hour * 60 + now.minute
    if inside:
        a, b = (m - 5) % 1440, (m + 6) % 1440
    else:
        a, b = (m + 10) % 1440, (m + 20) % 1440
    return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"


def test_match_time_and_boolean_conditions(tmp_path: Path) -> None:
    today = WEEKDAYS[datetime.now(UTC).weekday()]
    not_today = [d for d in WEEKDAYS if d != today]

    def rule(rid: str, cond: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "triggers": [{"type": "file.modify"}], "conditions": [cond],
                "actions": [{"agent": {"prompt": rid}}]}

    rules = [
        rule("eq", {"match": {"field": "data.kind", "equals": "py"}}),
        rule("glob", {"match": {"field": "path", "glob": "src/**/*.py"}}),
        rule("regex", {"match": {"field": "payload.path", "regex": "^src/.*\\.py$"}}),
        rule("glob-no", {"match": {"field": "path", "glob": "lib/**"}}),
        rule("time-in", {"time": {"weekdays": [today], "hours": _hours_around_now(True), "tz": "UTC"}}),
        rule("time-out-hours", {"time": {"hours": _hours_around_now(False), "tz": "UTC"}}),
        rule("time-out-day", {"time": {"weekdays": not_today, "tz": "UTC"}}),
        rule("not", {"not": {"match": {"field": "data.kind", "equals": "js"}}}),
        rule("any", {"any": [{"match": {"field": "data.kind", "equals": "js"}},
                             {"field": "payload.kind", "operator": "eq", "value": "py"}]}),
        rule("all-no", {"all": [{"match": {"field": "data.kind", "equals": "py"}},
                                {"match": {"field": "type", "equals": "file.create"}}]}),
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start(rules)
        h.publish("file.modify", {"path": "src/m/a.py", "kind": "py"})
        await h.idle()
        assert sorted(s["prompt"] for s in h.submitted) == ["any", "eq", "glob", "not", "regex", "time-in"]
        for rid in ("glob-no", "time-out-hours", "time-out-day", "all-no"):
            assert h.outcomes(rid) == {"condition_failed": 1}, rid
        trace = h.engine.store.run(h.root, "all-no", h.runs("all-no")[0]["run_id"])
        assert trace["conditions"][0]["kind"] == "all" and [r["ok"] for r in trace["conditions"][0]["results"]] == \
            [True, False]
        await h.stop()

    run(body)


def test_shell_conditions_pass_fail_expect_timeout_env_stdin(tmp_path: Path) -> None:
    def rule(rid: str, cond: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "triggers": [{"type": "file.modify"}], "conditions": [cond],
                "actions": [{"agent": {"prompt": rid}}], "mode": "parallel"}

    env_cmd = ('printf "%s|%s|%s|%s" "$AIWG_EVENT_TYPE" "$AIWG_EVENT_PATH" "$AIWG_RULE_ID" "$PWD" > env.out; '
               'cat > stdin.json; printf "%s" "$AIWG_EVENT_JSON" > env.json; echo line1; echo oops >&2')
    rules = [
        rule("pass", {"shell": "true"}),
        rule("fail", {"shell": "exit 3"}),
        rule("expect-fail", {"shell": "exit 1", "expect": "fail"}),
        rule("expect-fail-but-ok", {"shell": "true", "expect": "fail"}),
        rule("timeout", {"shell": "sleep 30", "timeout_seconds": 0.3}),
        rule("env", {"shell": env_cmd}),
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start(rules)
        t0 = time.monotonic()
        h.publish("file.modify", {"path": "src/a.py"})
        await h.idle()
        assert time.monotonic() - t0 < 5, "the timeout must kill sleep 30"
        assert sorted(s["prompt"] for s in h.submitted) == ["env", "expect-fail", "pass"]
        for rid in ("fail", "expect-fail-but-ok", "timeout"):
            assert h.outcomes(rid) == {"condition_failed": 1}, rid
        fail = h.engine.store.run(h.root, "fail", h.runs("fail")[0]["run_id"])["conditions"][0]
        assert fail["exit"] == 3 and fail["ok"] is False and fail["duration_ms"] >= 0
        to = h.engine.store.run(h.root, "timeout", h.runs("timeout")[0]["run_id"])["conditions"][0]
        assert to["timed_out"] is True and to["duration_ms"] < 3000
        assert (h.project / "env.out").read_text() == f"file.modify|src/a.py|env|{h.root}"
        stdin = json.loads((h.project / "stdin.json").read_text())
        assert stdin["type"] == "file.modify" and stdin["data"] == {"path": "src/a.py"}
        assert json.loads((h.project / "env.json").read_text())["data"]["path"] == "src/a.py"
        env = h.engine.store.run(h.root, "env", h.runs("env")[0]["run_id"])["conditions"][0]
        assert env["stdout"] == "line1" and env["stderr"] == "oops" and env["exit"] == 0
        await h.stop()

    run(body)


def test_actions_in_order_stop_on_error_unless_continue(tmp_path: Path) -> None:
    rules = [
        {"id": "stops", "triggers": [{"type": "go"}],
         "actions": [{"shell": "echo one >> order.txt"}, {"shell": "exit 4"}, {"shell": "echo three >> order.txt"}]},
        {"id": "continues", "triggers": [{"type": "go2"}],
         "actions": [{"shell": "exit 4", "continue_on_error": True}, {"shell": "echo after >> order2.txt"},
                     {"doctor": {}}, {"notify": {"message": "done {type}"}}]},
        {"id": "queue-down", "triggers": [{"type": "go3"}], "actions": [{"agent": {"prompt": "x"}}]},
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start(rules)
        h.publish("go")
        h.publish("go2")
        await h.idle()
        assert (h.project / "order.txt").read_text() == "one\n"
        stops = h.engine.store.run(h.root, "stops", h.runs("stops")[0]["run_id"])
        assert stops["outcome"] == "error" and "actions[1] (shell): exited with status 4" in stops["reason"]
        assert [a["ok"] for a in stops["actions"]] == [True, False]
        assert (h.project / "order2.txt").read_text() == "after\n"
        cont = h.engine.store.run(h.root, "continues", h.runs("continues")[0]["run_id"])
        assert [a["ok"] for a in cont["actions"]] == [False, True, True, True] and cont["outcome"] == "error"
        assert h.doctor_calls == [h.root]
        assert h.of_type("notify.request")[0].data["message"] == "done go2"
        h.submit_error = "task queue not available yet"
        h.publish("go3")
        await h.idle()
        r = h.runs("queue-down")[0]
        assert r["outcome"] == "error" and "task queue not available yet" in r["reason"]
        await h.stop()

    run(body)


def test_emit_chains_rules_and_carries_origin(tmp_path: Path) -> None:
    rules = [
        {"id": "a", "triggers": [{"type": "file.modify"}],
         "actions": [{"emit": {"type": "review.needed", "data": {"file": "{path}"}}}]},
        {"id": "b", "triggers": [{"type": "review.needed"}],
         "actions": [{"agent": {"prompt": "review {{data.file}}"}}]},
    ]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start(rules)
        h.publish("file.modify", {"path": "x.py"})
        await h.idle()
        assert [s["prompt"] for s in h.submitted] == ["review x.py"]
        ev = h.of_type("review.needed")[0]
        assert ev.data["rule_id"] == "a" and ev.data["origin"]["event_type"] == "file.modify"
        assert ev.source == "rule:a"
        runs = h.of_type("automation.run")
        assert {e.data["rule_id"] for e in runs} == {"a", "b"}
        await h.stop()

    run(body)


def test_schedule_jobs_shorthand(tmp_path: Path) -> None:
    jobs = [{"id": "health", "cron": "0 */6 * * *", "action": "doctor"},
            {"id": "fix", "cron": "0 2 * * *", "action": "agent", "prompt": "nightly fixes", "agent": "coder"},
            {"id": "sh", "cron": "0 3 * * *", "action": "shell:echo ran > cron.txt"},
            {"id": "sentence", "cron": "0 4 * * *", "action": "summarize the week"},
            {"id": "audit", "cron": "0 5 * * *", "action": "artifact-audit"}]

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([], jobs)
        for j in jobs:
            h.bus.publish("cron.fired", h.root, {"job_id": j["id"], "action": j["action"], "scheduled": "x",
                                                  "actual": "y"}, source="cron")
        await h.idle()
        assert h.doctor_calls == [h.root]
        assert [(s["prompt"], s["agent"], s["source"]) for s in h.submitted] == [
            ("nightly fixes", "coder", "cron"), ("summarize the week", None, "cron")]
        assert (h.project / "cron.txt").read_text() == "ran\n"
        note = h.of_type("notify.request")[0].data["message"]
        assert "artifact-audit" in note and "no handler" in note
        status = {r["id"]: r for r in h.engine.rpc_status(_status_params())["rules"]}
        assert status["schedule:health"]["next_fire"] and status["schedule:health"]["runs"] == 1
        assert status["schedule:health"]["last_outcome"] == "success"
        await h.stop()

    run(body)


def _status_params() -> Any:
    from aiwg_service.protocol import AutomationStatusParams

    return AutomationStatusParams()
