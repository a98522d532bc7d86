"""Rules that cannot leak secrets, hang the loop or run away: each finding of the security review, reproduced.

Real engine, bus, SQLite and shells (``Harness``); the service itself where the finding went through it.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rules_support import Harness, config_errors, run
from service_fixture import ServiceEnv, wait_for

from aiwg_service import globs
from aiwg_service.events.watcher.filters import IgnoreMatcher
from aiwg_service.logsafe import SafeRecords
from aiwg_service.protocol import AutomationTraceParams

TOKEN = "ghp_" + "A1b2C3d4" * 5  # the shape of a GitHub token, not a real one
AWS = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own environment holds secrets, as a user's login session does."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/user/0/systemd/notify")
    monkeypatch.setenv("AIWG_ALLOWED_FOR_RULE", "visible-value")


def runs(h: Harness, rule: str) -> int:
    st = h.state(rule)
    return st.runs if st is not None else 0


def _trace(h: Harness, rule: str) -> dict[str, Any]:
    assert h.engine is not None
    h.engine.store.flush()
    runs = h.engine.rpc_trace(AutomationTraceParams(ruleId=rule, limit=10))["runs"]
    return h.engine.rpc_trace(AutomationTraceParams(ruleId=rule, runId=runs[0]["run_id"]))["run"]


# -- secrets ---------------------------------------------------------------------------------------------------


def test_shell_commands_get_the_allow_listed_environment(tmp_path: Path, secret_env: None) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([
            {"id": "c", "triggers": [{"type": "go"}], "env": ["AIWG_ALLOWED_FOR_RULE"],
             "conditions": [{"shell": "env > cond.env"}], "actions": [{"shell": "env > act.env"}]},
        ])
        h.publish("go", {"path": "src/a.py"})
        await h.until(lambda: (h.project / "act.env").exists(), what="the action")
        await h.idle()
        for name in ("cond.env", "act.env"):
            env = dict(line.split("=", 1) for line in (h.project / name).read_text().splitlines() if "=" in line)
            assert "GITHUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env and "NOTIFY_SOCKET" not in env
            assert env["AIWG_ALLOWED_FOR_RULE"] == "visible-value"  # named in the rule's env
            assert env["AIWG_EVENT_TYPE"] == "go" and env["AIWG_EVENT_PATH"] == "src/a.py"
            assert "PATH" in env
        await h.stop()

    run(body)


def test_traces_never_keep_a_secret_a_command_printed(tmp_path: Path, secret_env: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "hunter2")

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([
            {"id": "leaky", "triggers": [{"type": "go"}], "env": ["GITHUB_TOKEN", "PW"],
             "conditions": [{"shell": "echo GITHUB_TOKEN=$GITHUB_TOKEN; echo curl https://admin:$PW@example.com/"}],
             "actions": [{"shell": "echo \"Authorization: Bearer $GITHUB_TOKEN\""}]},
        ])
        h.publish("go")
        await h.until(lambda: runs(h, "leaky") >= 1, what="the run")
        await h.idle()
        text = json.dumps(_trace(h, "leaky"))
        assert TOKEN not in text and "hunter2" not in text
        assert "GITHUB_TOKEN=[REDACTED]" in text and "admin:[REDACTED]@example.com" in text
        db = (h.state_dir / "automation.db").read_bytes()
        assert TOKEN.encode() not in db and b"hunter2" not in db
        await h.stop()

    run(body)


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        _Hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_webhook_action_takes_its_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret_url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/{TOKEN}"
    monkeypatch.setenv("HOOK_URL", secret_url)

    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "w", "triggers": [{"type": "go"}],
                        "actions": [{"webhook": {"url_env": "HOOK_URL", "message": "hello"}}]}])
        h.publish("go")
        await h.until(lambda: runs(h, "w") >= 1, what="the run")
        await h.idle()
        trace = _trace(h, "w")
        assert trace["outcome"] == "success", trace
        assert TOKEN not in json.dumps(trace) and trace["actions"][0]["result"]["url"] == "$HOOK_URL"
        await h.stop()

    with caplog.at_level(logging.DEBUG):
        run(body)
    server.shutdown()
    assert json.loads(_Hook.bodies[-1])["message"] == "hello"
    assert TOKEN not in caplog.text
    assert config_errors({"rules": [{"id": "w", "triggers": [{"type": "go"}],
                                     "actions": [{"webhook": {"url_env": "not a name"}}]}]})


@pytest.mark.parametrize(("doc", "where", "kind"), [
    ({"rules": [{"id": "n", "triggers": [{"type": "x"}],
                 "actions": [{"webhook": {"url": "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXX"}}]}]},
     "rules[0].actions[0].webhook.url", "Slack webhook"),
    ({"rules": [{"id": "n", "triggers": [{"type": "x"}],
                 "actions": [{"webhook": {"url": "https://admin:hunter2@example.com/hook"}}]}]},
     "rules[0].actions[0].webhook.url", "URL credentials"),
    ({"rules": [{"id": "n", "triggers": [{"type": "x"}],
                 "actions": [{"shell": "curl -H 'Authorization: Bearer abcdefghijklmnop1234' https://x"}]}]},
     "rules[0].actions[0].shell", "bearer token"),
    ({"agents": {"x": {"kind": "command", "command": ["tool", "--api-key=abcdef123456", "{prompt}"]}}},
     "agents.x.command[1]", "secret"),
    ({"agents": {"x": {"kind": "claude", "args": ["--api-key", "abcdef123456"]}}}, "agents.x.args", "secret"),
    ({"messaging": {"slack": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}}}, "messaging.slack.Authorization", ""),
    ({"messaging": {"x": {"private_key": "abc"}}}, "messaging.x.private_key", ""),
    ({"messaging": {"x": {"AWS_SECRET_ACCESS_KEY": AWS}}}, "messaging.x.AWS_SECRET_ACCESS_KEY", ""),
])
def test_config_check_finds_secrets_by_shape_and_by_name(doc: dict[str, Any], where: str, kind: str) -> None:
    errors = config_errors(doc)
    assert any(f": {where}: " in e and "secret" in e and kind in e for e in errors), errors


def test_config_check_accepts_what_only_names_a_secret() -> None:
    assert config_errors({"webhook": {"secret_env": "AIWG_WEBHOOK_SECRET"},
                          "agents": {"x": {"kind": "claude", "env": ["GITHUB_TOKEN"], "args": ["--model", "opus"]}},
                          "rules": [{"id": "r", "triggers": [{"type": "x"}], "env": ["GITHUB_TOKEN"],
                                     "actions": [{"shell": "gh pr list --token-file ~/.config/gh/t"}]}]}) == []


# -- injection -------------------------------------------------------------------------------------------------


def test_a_newline_in_a_logged_value_cannot_forge_a_line(tmp_path: Path) -> None:
    out = tmp_path / "log"
    handler = logging.FileHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(SafeRecords())
    log = logging.getLogger("aiwg.test-forgery")
    log.addHandler(handler)
    try:
        log.warning("changed: %s", "a.py\nERROR aiwg.service the disk is on fire\x1b[31m",
                    extra={"PROJECT": "/p\nFAKE=1"})
        log.warning("token seen: %s", TOKEN)
    finally:
        log.removeHandler(handler)
        handler.close()
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and not any(line.startswith("ERROR") for line in lines)
    assert "a.py\\nERROR aiwg.service the disk is on fire\\x1b[31m" in lines[0]
    assert TOKEN not in lines[1] and "[REDACTED]" in lines[1]


def test_a_file_name_with_a_newline_through_the_real_service(svc_env: ServiceEnv) -> None:
    svc_env.write_project_config({
        "watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["create"]}]}, "schedule": {"jobs": []},
        "rules": [{"id": "say", "triggers": [{"type": "file.create", "paths": ["src/**"]}],
                   "actions": [{"notify": {"message": "new file {path}"}}]}]})
    (svc_env.project / "src").mkdir()
    svc_env.start("--log-file", str(svc_env.tmp / "service.log"))
    (svc_env.project / "src" / "x\nERROR aiwg.service forged").write_text("")
    log = svc_env.tmp / "service.log"
    wait_for(lambda: "forged" in log.read_text(), what="the rule's log line")
    lines = log.read_text().splitlines()
    assert all(line[:4].isdigit() for line in lines), lines  # every line is a record of ours: it starts with a date
    assert any("new file src/x\\nERROR aiwg.service forged" in line for line in lines), lines


# -- runaway ---------------------------------------------------------------------------------------------------


def test_a_backtracking_regex_times_out_instead_of_holding_the_loop(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        # the review's ^in/(a+)+$ held `re` for over 30 s; the regex package answers it at once, and a pattern
        # that still backtracks in it, (a|aa)+, runs out of its time limit instead
        await h.start([{"id": "review", "triggers": [{"type": "file.modify"}],
                        "conditions": [{"match": {"field": "data.path", "regex": "^in/(a+)+$"}}],
                        "actions": [{"agent": {"prompt": "never"}}]},
                       {"id": "redos", "triggers": [{"type": "file.modify"}],
                        "conditions": [{"match": {"field": "data.path", "regex": "^in/(a|aa)+$"}}],
                        "actions": [{"agent": {"prompt": "never"}}]},
                       {"id": "aiwg-redos", "trigger": {"type": "file.modify"},
                        "conditions": [{"field": "data.path", "operator": "matches", "value": "^in/(a|aa)+$"}],
                        "action": {"type": "agent", "prompt": "never"}}])
        h.publish("file.modify", {"path": "in/" + "a" * 40 + "!"})
        await h.until(lambda: runs(h, "review") >= 1, what="the review's pattern")
        assert _trace(h, "review")["conditions"][0]["ok"] is False
        await h.until(lambda: runs(h, "redos") >= 1 and runs(h, "aiwg-redos") >= 1, what="both runs")
        await h.idle()
        for rule in ("redos", "aiwg-redos"):
            cond = _trace(h, rule)["conditions"][0]
            assert cond["ok"] is False and cond.get("timed_out") is True and "ran out of time" in cond["error"]
        assert h.engine is not None and h.engine.health()["regex_timeouts"] >= 2
        assert h.submitted == []
        await h.stop()

    run(body)


def test_globs_match_in_linear_time_in_both_modes() -> None:
    """8 ``**`` segments against a 41-level path took 6 s per match as a backtracking regex."""
    deep = "/".join(["a"] * 41) + "/y.py"
    rule = globs.compile_rule("/".join(["**/a"] * 8) + "/**/x.py")
    assert rule.linear and rule.fullmatch(deep) is False and rule.fullmatch(deep[:-4] + "x.py") is True
    stars = globs.compile_rule("*a*a*a*a*a*a*a*b")
    assert stars.linear and stars.fullmatch("a" * 250) is False
    ignore = IgnoreMatcher(["/".join(["**/a"] * 8) + "/**/x.py", "*.tmp"])
    assert ignore.match(deep[:-4] + "x.py", False) and not ignore.match(deep, False)
    assert ignore.match("a/b/c.tmp", False)
    # the common shapes stay one regex
    assert not globs.compile_rule("src/**/*.py").linear and not globs.compile_rule("{a,b}/*.ts").linear
    with pytest.raises(ValueError, match="more than 256 alternatives"):
        globs.compile_rule("{a,b}" * 9)


def test_one_event_never_forks_more_than_max_rule_processes(tmp_path: Path) -> None:
    """300 shell conditions on one event once made 602 processes; now at most the cap run at a time."""
    async def body() -> None:
        h = Harness(tmp_path)
        log = h.project / "spans.log"
        cond = f'echo "s $$ $(date +%s%N)" >> {log}; sleep 0.2; echo "e $$ $(date +%s%N)" >> {log}; exit 1'
        await h.start([{"id": f"r{i}", "triggers": [{"type": "go"}], "conditions": [{"shell": cond}],
                        "actions": [{"agent": {"prompt": "never"}}]} for i in range(24)])
        assert h.engine is not None
        h.engine.gate.set_limit(4)
        peak = 0
        h.publish("go")

        def done() -> bool:
            nonlocal peak
            assert h.engine is not None
            peak = max(peak, h.engine.gate.running)
            return sum(runs(h, f"r{i}") for i in range(24)) == 24

        await h.until(done, timeout=60, what="all 24 conditions")
        spans: dict[str, list[int]] = {}
        for line in log.read_text().split("\n"):
            if line:
                kind, pid, ns = line.split()
                spans.setdefault(pid, [0, 0])[0 if kind == "s" else 1] = int(ns)
        points = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
        overlap = most = 0
        for _, d in points:
            overlap += d
            most = max(most, overlap)
        assert len(spans) == 24 and most <= 4 and peak <= 4
        await h.stop()

    run(body)


def test_the_unit_caps_the_services_tasks() -> None:
    units = Path(__file__).resolve().parent.parent / "units"
    for name in ("aiwg.service", "aiwg@.service"):
        assert any(line.startswith("TasksMax=") for line in (units / name).read_text().splitlines()), name


def test_a_shell_condition_that_touches_its_own_file_is_stopped(svc_env: ServiceEnv) -> None:
    """The loop guard counted runs that acted; a failing condition that rewrites the file never acted."""
    svc_env.write_project_config({
        "watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["modify"]}]}, "schedule": {"jobs": []},
        "rules": [{"id": "toucher", "triggers": [{"type": "file.modify", "paths": ["src/loop.txt"]}],
                   "conditions": [{"shell": "echo again >> src/loop.txt; exit 1"}], "mode": "queued",
                   "max_runs_per_minute": 5, "actions": [{"agent": {"prompt": "never"}}]}]})
    (svc_env.project / "src").mkdir()
    (svc_env.project / "src" / "loop.txt").write_text("start\n")
    svc_env.start()
    sub = svc_env.connect()
    sub.request("events.subscribe", {"type": "automation.loop_detected"})
    with (svc_env.project / "src" / "loop.txt").open("a") as f:
        f.write("go\n")
    note = sub.read()
    assert note["params"]["data"]["rule_id"] == "toucher"
    count = (svc_env.project / "src" / "loop.txt").read_text().count("again")
    time.sleep(1.0)
    assert (svc_env.project / "src" / "loop.txt").read_text().count("again") == count <= 7
    rule = next(r for r in svc_env.call("automation.status")["rules"] if r["id"] == "toucher")
    assert rule["disabled_reason"].startswith("loop guard")


def test_an_agent_chain_is_cut_at_max_chain_depth(tmp_path: Path) -> None:
    """A rule on task.completed that queues an agent task made a task every few seconds, forever."""
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "again", "triggers": [{"type": "task.completed"}],
                        "actions": [{"agent": {"prompt": "follow up"}}], "max_runs_per_minute": 600}])
        h.publish("task.completed", {"id": "t-outside"}, source="tasks")  # a task the user submitted: depth 0
        for n in range(1, 4):
            await h.until(lambda n=n: len(h.submitted) == n, what=f"task {n}")
            assert h.submitted[-1]["origin"]["chain_depth"] == n
            h.publish("task.completed", {"id": f"task-{n:04d}"}, source="tasks")  # what the supervisor publishes
        await h.until(lambda: h.of_type("automation.chain_cut"), what="the cut")
        await h.idle()
        assert len(h.submitted) == 3
        cut = h.of_type("automation.chain_cut")[0].data
        assert cut["rule_id"] == "again" and cut["depth"] == 3 and cut["max_chain_depth"] == 3
        trace = _trace(h, "again")
        assert trace["outcome"] == "skipped" and trace["reason"].startswith("chain depth")
        assert h.engine is not None and h.engine.health()["chain_cuts"] == 1
        await h.stop()

    run(body)


def test_emitted_events_carry_their_depth(tmp_path: Path) -> None:
    async def body() -> None:
        h = Harness(tmp_path)
        await h.start([{"id": "a", "triggers": [{"type": "x.a"}], "actions": [{"emit": {"type": "x.b"}}]},
                       {"id": "b", "triggers": [{"type": "x.b"}], "actions": [{"emit": {"type": "x.a"}}]}],
                      extra={"automation": {"max_chain_depth": 4}})
        h.publish("x.a")
        await h.until(lambda: h.of_type("automation.chain_cut"), what="the cut")
        depths = [e.data["chain_depth"] for e in h.events if e.type in ("x.a", "x.b") and "chain_depth" in e.data]
        assert depths == [1, 2, 3, 4]
        await h.stop()

    run(body)


@pytest.mark.parametrize(("doc", "message"), [
    ({"rules": [{"id": f"r{i}", "triggers": [{"type": "x"}], "actions": [{"doctor": {}}]} for i in range(2001)]},
     "at most 2000 together per project"),
    ({"schedule": {"jobs": [{"id": f"j{i}", "cron": "* * * * *", "action": "shell:true"} for i in range(201)]}},
     "at most 200 per project"),
    ({"rules": [{"id": "r", "triggers": [{"type": "x"}], "actions": [{"doctor": {}}],
                 "max_runs_per_minute": 100_000}]}, "must be >= 1 and <= 600"),
    ({"rules": [{"id": "r", "triggers": [{"type": "x"}], "actions": [{"doctor": {}}], "mode": "parallel",
                 "max": 10_000}]}, "must be >= 1 and <= 100"),
    ({"rules": [{"id": "r", "triggers": [{"type": "x"}] * 51, "actions": [{"doctor": {}}]}]}, "at most 50"),
])
def test_sizes_are_capped_with_clear_errors(doc: dict[str, Any], message: str) -> None:
    errors = config_errors(doc)
    assert any(message in e for e in errors), errors[:3]
