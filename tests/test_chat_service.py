"""Conversations end to end: the real service, its socket, SQLite, and the fake claude's real sessions."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from service_fixture import ServiceEnv, wait_for

from tests.tasks_support import make_fakebin

FINAL = {"completed", "failed", "timeout", "cancelled"}


def start_chat_service(env: ServiceEnv, projects: list[Path] | None = None) -> ServiceEnv:
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"
    env.env["HOME"] = str(env.tmp / "home")  # the fake claude keeps its sessions in ~/.claude, as claude does
    cfg = env.config_home / "aiwg" / "daemon.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"daemon": {"stop_timeout_seconds": 0}}))
    env.start(projects=projects)
    return env


@pytest.fixture
def chat(svc_env: ServiceEnv) -> ServiceEnv:
    return start_chat_service(svc_env)


def wait_task(env: ServiceEnv, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        t = env.call("task.get", {"taskId": task_id})
        return t if t["state"] in FINAL else None

    return wait_for(done, timeout, interval=0.05, what=f"task {task_id} to finish")


def calls(env: ServiceEnv) -> list[dict[str, Any]]:
    path = env.tmp / "home" / ".claude" / "fake-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def error(env: ServiceEnv, method: str, params: dict[str, Any]) -> dict[str, Any]:
    c = env.connect()
    try:
        reply = c.request(method, params)
    finally:
        c.close()
    assert "error" in reply, reply
    return reply["error"]


def session_files(env: ServiceEnv) -> list[Path]:
    return sorted((env.tmp / "home" / ".claude" / "projects").glob("*/*.jsonl"))


def test_turns_share_one_session_resumed_in_the_project_realpath(chat: ServiceEnv) -> None:
    first = chat.call("chat.send", {"message": "remember the word teal"})  # the AIWG daemon's form
    assert set(first) >= {"taskId", "conversation", "state"} and first["state"] == "queued"
    t1 = wait_task(chat, first["taskId"])
    assert t1["state"] == "completed" and t1["source"] == "chat" and t1["priority"] == 5
    conv = first["conversation"]
    second = chat.call("chat.send", {"message": "what was the word?", "conversation": conv, "priority": 7})
    assert second["conversation"] == conv and second["turn"] == 2
    t2 = wait_task(chat, second["taskId"])
    sid = t1["session_id"]
    assert t2["session_id"] == sid and t2["priority"] == 7
    assert f"turn 2 of session {sid}; earlier: remember the word teal" in t2["result"]

    argvs = [c["argv"] for c in calls(chat)]
    assert argvs[0][argvs[0].index("--session-id") + 1] == sid and "--resume" not in argvs[0]
    assert argvs[1][argvs[1].index("--resume") + 1] == sid and "--session-id" not in argvs[1]
    assert {c["cwd"] for c in calls(chat)} == {os.path.realpath(chat.project)}

    hist = chat.call("chat.history", {"conversation": conv})
    assert hist["session_id"] == sid and hist["cwd"] == os.path.realpath(chat.project)
    assert hist["title"] == "remember the word teal" and hist["session_state"] == "active"
    assert [(t["n"], t["taskId"], t["state"]) for t in hist["turns"]] == [
        (1, first["taskId"], "completed"), (2, second["taskId"], "completed")]
    assert hist["cost_usd"] == pytest.approx(2 * 0.0123)
    listed = chat.call("chat.list", {})["conversations"]
    assert [(c["id"], c["turns"]) for c in listed] == [(conv, 2)]
    assert listed[0]["cost_usd"] == pytest.approx(2 * 0.0123)

    db = chat.state_dir / "chat.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert chat.call("chat.send", {"message": "a new one"})["conversation"] != conv


def test_bad_input_is_refused_and_nothing_is_lost(svc_env: ServiceEnv) -> None:
    other = svc_env.tmp / "other"
    other.mkdir()
    env = start_chat_service(svc_env, projects=[svc_env.project, other])
    err = error(env, "chat.send", {"message": "hi"})
    assert err["code"] == -32602 and err["data"]["param"] == "project"
    err = error(env, "chat.send", {"message": "hi", "conversation": "c-nope"})
    assert err["code"] == -32602 and err["data"]["param"] == "conversation" and "c-nope" in err["message"]
    err = error(env, "chat.send", {"message": "", "project": str(env.project)})
    assert err["code"] == -32602 and err["data"]["param"] == "message"

    slow = env.call("chat.send", {"message": "think sleep=2", "project": str(env.project)})
    conv = slow["conversation"]
    busy = error(env, "chat.send", {"message": "next", "conversation": conv})
    assert busy["code"] == -32000 and busy["data"]["taskId"] == slow["taskId"]
    err = error(env, "chat.send", {"message": "next", "conversation": conv, "project": str(other)})
    assert err["code"] == -32602 and err["data"]["param"] == "project" and str(env.project) in err["message"]
    err = error(env, "chat.delete", {"conversation": conv})
    assert err["code"] == -32000
    wait_task(env, slow["taskId"])
    assert [t["n"] for t in env.call("chat.history", {"conversation": conv})["turns"]] == [1]
    assert env.call("chat.delete", {"conversation": conv}) == {"conversation": conv, "deleted": True}
    assert error(env, "chat.history", {"conversation": conv})["code"] == -32602
    assert env.call("task.get", {"taskId": slow["taskId"]})["state"] == "completed"  # the task stays


def test_deleted_session_is_detected_and_forked_with_a_summary(chat: ServiceEnv) -> None:
    first = chat.call("chat.send", {"message": "the secret is 42"})
    conv = first["conversation"]
    sid = wait_task(chat, first["taskId"])["session_id"]
    for f in session_files(chat):
        f.unlink()  # the user cleared claude's sessions
    second = chat.call("chat.send", {"message": "what is the secret?", "conversation": conv})
    t2 = wait_task(chat, second["taskId"])
    assert t2["state"] == "failed" and f"No conversation found with session ID: {sid}" in t2["result"]
    err = error(chat, "chat.send", {"message": "again", "conversation": conv})
    assert err["code"] == -32602 and err["data"]["session_lost"] is True and "fork" in err["message"]
    assert chat.call("chat.history", {"conversation": conv})["session_state"] == "lost"

    fork = chat.call("chat.fork", {"conversation": conv})
    assert fork["mode"] == "summary" and fork["parent"] == conv and fork["at_turn"] == 2
    third = chat.call("chat.send", {"message": "and now?", "conversation": fork["conversation"]})
    t3 = wait_task(chat, third["taskId"])
    assert t3["state"] == "completed" and t3["session_id"] != sid
    assert "[turn 1] user: the secret is 42" in t3["prompt"] and t3["prompt"].endswith("and now?")
    hist = chat.call("chat.history", {"conversation": fork["conversation"]})
    assert hist["turns"][0]["message"] == "and now?" and hist["session_state"] == "active"


def test_fork_of_a_live_session_uses_claude_fork_and_at_turn_uses_a_summary(chat: ServiceEnv) -> None:
    a = chat.call("chat.send", {"message": "alpha"})
    conv = a["conversation"]
    sid = wait_task(chat, a["taskId"])["session_id"]
    b = chat.call("chat.send", {"message": "beta", "conversation": conv})
    wait_task(chat, b["taskId"])

    fork = chat.call("chat.fork", {"conversation": conv})
    assert fork["mode"] == "session" and fork["at_turn"] == 2
    c = chat.call("chat.send", {"message": "gamma", "conversation": fork["conversation"]})
    tc = wait_task(chat, c["taskId"])
    assert tc["session_id"] != sid and f"forked from {sid}; earlier: alpha | beta" in tc["result"]
    argv = calls(chat)[-1]["argv"]
    assert argv[argv.index("--resume") + 1] == sid and "--fork-session" in argv
    d = chat.call("chat.send", {"message": "delta", "conversation": fork["conversation"]})
    td = wait_task(chat, d["taskId"])
    assert td["session_id"] == tc["session_id"] and "earlier: alpha | beta | gamma" in td["result"]
    # the original goes on undisturbed
    e = chat.call("chat.send", {"message": "epsilon", "conversation": conv})
    assert "earlier: alpha | beta)" in wait_task(chat, e["taskId"])["result"]

    early = chat.call("chat.fork", {"conversation": conv, "at_turn": 1})
    assert early["mode"] == "summary"
    f = chat.call("chat.send", {"message": "zeta", "conversation": early["conversation"]})
    tf = wait_task(chat, f["taskId"])
    assert "[turn 1] user: alpha" in tf["prompt"] and "beta" not in tf["prompt"]
    err = error(chat, "chat.fork", {"conversation": conv, "at_turn": 9})
    assert err["code"] == -32602 and err["data"]["param"] == "at_turn"


def test_kill_9_and_restart_keep_resuming_the_same_session(chat: ServiceEnv) -> None:
    first = chat.call("chat.send", {"message": "one"})
    conv = first["conversation"]
    sid = wait_task(chat, first["taskId"])["session_id"]
    # a turn in flight when the service dies goes on (the agent outlives the service and is re-adopted)
    slow = chat.call("chat.send", {"message": "two sleep=8", "conversation": conv})
    wait_for(lambda: chat.call("chat.history", {"conversation": conv})["turns"][1]["session_id"], 20,
             what="the second turn's session to be seen")
    chat.stop(signal.SIGKILL)
    chat.start()
    t2 = wait_task(chat, slow["taskId"], timeout=60)
    assert t2["state"] == "completed" and t2["session_id"] == sid and t2["attempts"] == 1
    third = chat.call("chat.send", {"message": "three", "conversation": conv})
    t3 = wait_task(chat, third["taskId"])
    assert t3["session_id"] == sid and "earlier: one | two sleep=8)" in t3["result"]
    argvs = [c["argv"] for c in calls(chat)]
    assert [a[a.index("--resume") + 1] for a in argvs[1:]] == [sid] * (len(argvs) - 1)
