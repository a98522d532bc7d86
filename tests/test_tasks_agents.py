"""Model (ids, times, profile validation) and agents (argv, env, stream-json parser)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgspec
import pytest

from aiwg_service.tasks.agents import (
    StreamJsonParser,
    build_argv,
    child_env,
    profile_lookup,
    prompt_stdin,
)
from aiwg_service.tasks.model import AgentProfile, Task, TaskState, new_task_id, parse_time, profile_problems, utc_now


def test_ids_sortable_unique_short() -> None:
    ids = [new_task_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 14 and i.startswith("t-") for i in ids)
    a = new_task_id()
    time.sleep(0.002)
    assert new_task_id() > a


def test_time_format_roundtrip() -> None:
    s = utc_now()
    assert len(s) == 24 and s.endswith("Z") and s[10] == "T"
    assert abs(parse_time(s) - time.time()) < 1


def test_task_json_roundtrip() -> None:
    t = Task(id=new_task_id(), project="/p", prompt="x", created_at=utc_now())
    d = t.to_dict()
    assert d["state"] == "queued" and d["source"] == "cli"
    assert msgspec.json.decode(msgspec.json.encode(t), type=Task) == t
    assert not t.finished and Task(id="t", project="/p", prompt="", state=TaskState.failed).finished


@pytest.mark.parametrize(("bad", "path"), [
    ({"max_turns": 0}, "$.max_turns"),
    ({"retry": -1}, "$.retry"),
    ({"memory_max": "lots"}, "$.memory_max"),
    ({"cpu_quota": "half"}, "$.cpu_quota"),
    ({"env": ["NOT VALID"]}, "$.env[0]"),
    ({"max_output_mb": 0}, "$.max_output_mb"),
    ({"timeout_minutes": -5}, "$.timeout_minutes"),
    ({"kind": "robot"}, "$.kind"),
])
def test_profile_validation_reports_path(bad: dict[str, object], path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=path.replace("$", r"\$").replace("[", r"\[")):
        msgspec.convert(bad, AgentProfile)


def test_profile_unknown_keys_are_ignored() -> None:
    # the config loader warns about them (like every other section); they never stop a profile loading
    assert msgspec.convert({"kind": "shell", "bogus": 1}, AgentProfile) == AgentProfile(kind="shell")


def test_profile_kind_checks() -> None:
    with pytest.raises(ValueError, match="unknown agent kind"):
        AgentProfile(kind="robot")  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'robot'"):
        msgspec.convert({"kind": "robot"}, AgentProfile)
    with pytest.raises(msgspec.ValidationError, match="needs a non-empty"):
        msgspec.convert({"kind": "command"}, AgentProfile)
    p = msgspec.convert({"kind": "command", "command": ["aider", "--message", "{prompt}"], "memory_max": "2G",
                         "cpu_quota": "50%"}, AgentProfile)
    assert p.command == ["aider", "--message", "{prompt}"]


def test_model_imports_light() -> None:
    code = ("import sys, aiwg_service.tasks.model as m; "
            "bad = [x for x in ('asyncio', 'sqlite3', 'uvloop') if x in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_build_argv() -> None:
    p = AgentProfile(model="sonnet", max_turns=7, allowed_tools=["Read", "Bash(git log:*)"],
                     permission_mode="acceptEdits", args=["--add-dir", "/x"])
    # the prompt is not in argv at all: it goes on stdin (any size; never read as an option)
    assert build_argv(p, "do it; rm -rf /") == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--model", "sonnet", "--max-turns", "7", "--allowedTools", "Read,Bash(git log:*)",
        "--permission-mode", "acceptEdits", "--add-dir", "/x"]
    assert prompt_stdin(p, "do it; rm -rf /") == "do it; rm -rf /"
    assert build_argv(AgentProfile(kind="shell"), "echo $HOME") == ["/bin/sh", "-c", "echo $HOME"]
    assert prompt_stdin(AgentProfile(kind="shell"), "echo $HOME") is None
    custom = AgentProfile(kind="command", command=["agent", "--message", "{prompt}"], args=["--json"])
    assert build_argv(custom, "a b; c") == ["agent", "--message", "a b; c", "--json"]
    assert prompt_stdin(custom, "a b; c") is None
    reads = AgentProfile(kind="command", command=["agent", "--from-stdin"])
    assert build_argv(reads, "a b; c") == ["agent", "--from-stdin"] and prompt_stdin(reads, "a b; c") == "a b; c"


def test_profile_lookup() -> None:
    look = profile_lookup({"claude": AgentProfile(model="m"), "x": AgentProfile(kind="shell")})
    assert look("claude").model == "m" and look("x").kind == "shell" and look("shell").kind == "shell"
    with pytest.raises(KeyError):
        look("nope")


def test_child_env() -> None:
    parent = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "k",
              "AWS_SECRET_ACCESS_KEY": "s", "NOTIFY_SOCKET": "/n", "LISTEN_FDS": "3", "INVOCATION_ID": "i",
              "WATCHDOG_USEC": "1", "JOURNAL_STREAM": "8:9", "GITHUB_TOKEN": "g",
              "DBUS_SESSION_BUS_ADDRESS": "unix:path=/b"}
    env = child_env(AgentProfile(env=["ANTHROPIC_API_KEY"]), "t-x", parent)
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "k",
                   "AIWG_TASK_ID": "t-x"}
    assert "DBUS_SESSION_BUS_ADDRESS" in child_env(AgentProfile(), "t", parent, systemd=True)
    assert child_env(AgentProfile(), "t", {})["PATH"]


def _stream() -> bytes:
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s-1", "model": "m1", "tools": ["Bash"]},
        {"type": "assistant", "session_id": "s-1", "message": {"id": "a", "content": [
            {"type": "text", "text": "hi"}], "usage": {"input_tokens": 3, "output_tokens": 2}}},
        {"type": "assistant", "session_id": "s-1", "message": {"id": "a", "content": [
            {"type": "tool_use", "id": "x", "name": "Bash", "input": {}}], "usage": {"input_tokens": 3,
                                                                                 "output_tokens": 2}}},
        {"type": "user", "session_id": "s-1",
         "message": {"content": [{"type": "tool_result", "content": "ok"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "final answer",
         "session_id": "s-1", "total_cost_usd": 0.25, "num_turns": 2, "duration_ms": 10,
         "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 7,
                   "cache_read_input_tokens": 9}},
    ]
    body = [json.dumps(x).encode() for x in lines]
    body.insert(1, b"not json at all")
    body.insert(3, b'{"type": "assistant", "message": 12}')  # wrong shape
    body.insert(4, b"{truncated")
    return b"\n".join(body) + b"\n"


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_parser_incremental(step: int) -> None:
    data = _stream()
    p = StreamJsonParser()
    for i in range(0, len(data), step):
        p.feed(data[i:i + step])
    p.close()
    assert p.session_id == "s-1" and p.model == "m1"
    assert p.result == "final answer" and not p.is_error and p.result_subtype == "success"
    assert p.cost_usd == 0.25 and p.num_turns == 2
    u = p.total_usage()
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens) == (
        100, 50, 7, 9)
    assert p.garbage_lines == 3


def test_parser_cut_short_and_errors() -> None:
    p = StreamJsonParser()
    data = _stream().split(b'{"type": "result"')[0]
    p.feed(data)
    p.feed(b'{"type":"result","subtype":"error_max_turns","is_error":true,"session_id":"s-1"}')  # no newline
    p.close()
    assert p.is_error and p.result_subtype == "error_max_turns"
    assert p.summary() == "hi"  # no result text: last assistant text
    u = p.total_usage()
    assert u is not None and (u.input_tokens, u.output_tokens) == (3, 2)  # message "a" counted once


def test_parser_skips_overlong_line() -> None:
    p = StreamJsonParser()
    p.MAX_LINE = 100
    p.feed(b"x" * 80)
    p.feed(b"y" * 80)
    p.feed(b"z\n" + json.dumps({"type": "result", "result": "r", "session_id": "s"}).encode() + b"\n")
    assert p.result == "r" and p.garbage_lines == 1


def test_a_prompt_that_looks_like_an_option_stays_a_prompt() -> None:
    """A file named ``--permission-mode=bypassPermissions`` with the prompt template ``{path}``."""
    evil = "--permission-mode=bypassPermissions"
    argv = build_argv(AgentProfile(), evil)
    assert evil not in argv and prompt_stdin(AgentProfile(), evil) == evil  # on stdin, never an option
    argv = build_argv(AgentProfile(kind="command", command=["tool", "-v", "--message", "{prompt}"]), evil)
    assert argv == ["tool", "-v", "--message", evil]  # one element, the value of --message
    problems = profile_problems(AgentProfile(kind="command", command=["tool", "--task={prompt}"]))
    assert problems and problems[0][0] == "command[1]" and "argv element of its own" in problems[0][1]


def test_cost_status_and_running_estimate() -> None:
    from aiwg_service.tasks.agents import StreamJsonParser

    def parse(*lines: str, prices: tuple[float, float, float, float] | None = None) -> StreamJsonParser:
        p = StreamJsonParser()
        p.prices = prices
        p.feed("".join(line + "\n" for line in lines).encode())
        p.close()
        return p

    def msg(i: int) -> str:
        return ('{"type":"assistant","message":{"id":"m' + str(i)
                + '","content":[],"usage":{"input_tokens":100,"output_tokens":1000}}}')

    est = parse(msg(1), msg(2), prices=(1.0, 10.0, 0.0, 0.0))
    assert est.running_cost() == pytest.approx(2 * (100 * 1.0 + 1000 * 10.0) / 1e6) and est.cost_status is None
    assert parse(msg(1)).running_cost() is None  # no prices, no reported figure: unknown
    ok = parse(msg(1), '{"type":"result","subtype":"success","result":"r","total_cost_usd":0.5}')
    assert ok.cost_usd == 0.5 and ok.cost_status == "reported" and ok.running_cost() == 0.5
    missing = parse('{"type":"result","subtype":"success","result":"r"}')
    assert missing.cost_usd is None and missing.cost_status == "missing" and missing.result == "r"
    for bad in ('"lots"', "-1", '{"usd": 1}', "true"):
        p = parse('{"type":"result","subtype":"success","result":"kept","total_cost_usd":' + bad + "}")
        assert p.cost_usd is None and p.cost_status == "malformed" and p.result == "kept", bad
