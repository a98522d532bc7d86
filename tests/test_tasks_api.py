"""task.* / chat.send end to end: the real service process, the real socket, aiwgctl, and the fake claude."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from service_fixture import BIN, RpcConn, ServiceEnv, wait_for

from tests.tasks_support import kill_quiet, make_fakebin, pid_alive, read_pid

SHELL_PROFILES = {"sh": {"kind": "shell"}, "sh0": {"kind": "shell", "retry": 0},
                  "echo": {"kind": "command", "command": ["/bin/echo", "said:", "{prompt}"]}}


def write_service_config(env: ServiceEnv, daemon: dict[str, Any] | None = None,
                         agents: dict[str, Any] | None = None) -> None:
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unconfined: these tests follow agents by the pids they write to the test's tmp dir (a bubblewrap
    # sandbox has its own pid namespace and /tmp); confinement has its own tests (test_sandbox_*.py).
    profiles = {"claude": {}, **(SHELL_PROFILES if agents is None else agents)}
    profiles = {name: {"sandbox": "off", **prof} for name, prof in profiles.items()}
    path.write_text(json.dumps({"daemon": {"stop_timeout_seconds": 0, **(daemon or {})}, "agents": profiles}))


def start(env: ServiceEnv, daemon: dict[str, Any] | None = None, **kw: Any) -> ServiceEnv:
    env.env["PATH"] = f"{make_fakebin(env.tmp)}:{env.env['PATH']}"
    write_service_config(env, daemon)
    env.start(**kw)
    return env


@pytest.fixture
def tsvc(svc_env: ServiceEnv) -> ServiceEnv:
    return start(svc_env)


def marks(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, pid, t = line.split()
        out.append((kind, int(pid), float(t)))
    return out


def max_overlap(m: list[tuple[str, int, float]]) -> int:
    cur = best = 0
    for kind, _pid, _t in sorted(m, key=lambda x: x[2]):
        cur += 1 if kind == "start" else -1
        best = max(best, cur)
    return best


def wait_state(env: ServiceEnv, tid: str, *states: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (t := env.call("task.get", {"taskId": tid}))["state"] in states and t,
                    timeout, what=f"{tid} to reach {states}")


# -- RPC ----------------------------------------------------------------------------------------------------


def test_submit_get_list_stats_and_wait(tsvc: ServiceEnv) -> None:
    res = tsvc.call("task.submit", {"prompt": "hello"})
    assert res["taskId"].startswith("t-") and res["state"] == "queued"
    assert res["project"] == str(tsvc.project) and res["agent"] == "claude"
    done = tsvc.call("task.submit", {"prompt": "second", "wait": True, "priority": 3})
    assert done["state"] == "completed" and done["result"] == "Done: second"
    assert done["cost_usd"] == 0.0123 and done["num_turns"] == 3 and done["input_tokens"] == 1234
    first = wait_state(tsvc, res["taskId"], "completed")
    assert first["taskId"] == first["id"] == res["taskId"]
    page = tsvc.call("task.list", {"limit": 1})  # an array, newest first, as the AIWG CLI iterates it
    assert [t["id"] for t in page] == [done["taskId"]]
    rest = tsvc.call("task.list", {"before": page[-1]["id"]})  # keyset: before = the last id seen
    assert [t["id"] for t in rest] == [res["taskId"]]
    assert tsvc.call("task.list", {"state": "failed"}) == []
    st = tsvc.call("task.stats")
    for k in ("total", "queued", "running", "completed", "failed", "cancelled", "timeout", "interrupted"):
        assert k in st
    assert st["total"] == 2 and st["completed"] == 2 and st["cost_usd"] == pytest.approx(0.0246)
    assert st["mean_run_s"] is not None and st["p95_run_s"] is not None
    chat = tsvc.call("chat.send", {"message": "from chat"})
    t = wait_state(tsvc, chat["taskId"], "completed")
    assert t["source"] == "chat" and t["priority"] == 5
    status = tsvc.call("daemon.status")
    assert status["subsystems"]["supervisor"]["running"] == 0 and "0 running" in status["status"]
    # events went on the bus as task.* with the task as data
    evs = tsvc.call("events.list", {"type": "task.*", "limit": 100})["events"]
    types = [e["type"] for e in evs if e["data"].get("taskId") == res["taskId"]]
    assert types == ["task.queued", "task.started", "task.session", "task.completed"]
    assert all(e["project"] == str(tsvc.project) for e in evs)


@pytest.mark.parametrize(("params", "param", "words"), [
    ({}, "prompt", "Missing required parameter: prompt"),
    ({"prompt": "x", "priority": "high"}, "priority", "priority"),
    ({"prompt": "x", "agent": "--nope"}, "agent", "known: claude, echo, sh, sh0, shell"),
    ({"prompt": "x", "agent": "../bin/sh"}, "agent", "nor a subagent name"),
    ({"prompt": "x\u0000y", "agent": "sh"}, "prompt", "NUL"),
    ({"prompt": "x", "project": "/nonexistent/elsewhere"}, "project", "not a project this service serves"),
    ({"prompt": "x", "timeout": 0}, "timeout", "timeout"),
])
def test_bad_submit_params(tsvc: ServiceEnv, params: dict[str, Any], param: str, words: str) -> None:
    c = tsvc.connect()
    reply = c.request("task.submit", params)
    c.close()
    err = reply["error"]
    assert err["code"] == -32602 and err["data"]["param"] == param and words in err["message"], err


def test_unknown_ids(tsvc: ServiceEnv) -> None:
    c = tsvc.connect()
    err = c.request("task.get", {"taskId": "t-nope"})["error"]
    assert err["code"] == -32602 and "t-nope" in err["message"]
    assert c.request("task.logs", {"taskId": "t-nope"})["error"]["code"] == -32602
    assert c.call("task.cancel", {"taskId": "t-nope"})["cancelled"] is False
    c.close()


def test_project_required_when_several(svc_env: ServiceEnv) -> None:
    other = svc_env.tmp / "other"
    other.mkdir()
    start(svc_env, projects=[svc_env.project, other])
    c = svc_env.connect()
    err = c.request("task.submit", {"prompt": "x"})["error"]
    assert err["code"] == -32602 and err["data"]["param"] == "project" and "2 projects" in err["message"]
    t = c.call("task.submit", {"prompt": "pwd", "agent": "sh", "project": str(other), "wait": True})
    assert t["project"] == str(other) and t["result"] == str(other)
    c.close()


def test_logs_and_follow(tsvc: ServiceEnv) -> None:
    t = tsvc.call("task.submit", {"prompt": "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; printf 'é€'",
                                  "agent": "sh"})
    c = RpcConn(tsvc.socket, 20)
    c.next_id += 1
    c.send_raw(json.dumps({"jsonrpc": "2.0", "id": c.next_id, "method": "task.logs",
                           "params": {"taskId": t["taskId"], "follow": True}}).encode() + b"\n")
    first = c.read()
    assert first["id"] == c.next_id  # the reply comes before any notification
    text, offset = first["result"]["data"], first["result"]["offset"]
    notes = []
    while True:
        n = c.read()
        assert n["method"] == "task.output"
        notes.append(n["params"])
        text += n["params"]["data"]
        assert n["params"]["offset"] >= offset
        offset = n["params"]["offset"]
        if n["params"].get("done"):
            break
    c.close()
    assert notes[-1]["state"] == "completed" and len(notes) >= 3  # it streamed, not one blob at the end
    assert text == "line1\nline2\nline3\nline4\nline5\né€"
    log = Path(tsvc.call("task.get", {"taskId": t["taskId"]})["log_path"])
    assert offset == log.stat().st_size
    # paging without follow, on character boundaries
    r = tsvc.call("task.logs", {"taskId": t["taskId"], "offset": 0, "limit": 31})
    assert r["data"] == "line1\nline2\nline3\nline4\nline5\n" and r["offset"] == 30 and not r["eof"]
    r2 = tsvc.call("task.logs", {"taskId": t["taskId"], "offset": r["offset"]})
    assert r2["data"] == "é€" and r2["eof"] and r2["state"] == "completed"
    # following a finished task: backlog, then done at once
    c = tsvc.connect()
    assert c.call("task.logs", {"taskId": t["taskId"], "follow": True, "offset": 30})["data"] == "é€"
    assert c.read()["params"] == {"taskId": t["taskId"], "data": "", "offset": offset, "done": True,
                                  "state": "completed"}
    c.close()


# -- scheduling, limits, timeouts ---------------------------------------------------------------------------


def test_priority_order_and_concurrency_limit(svc_env: ServiceEnv) -> None:
    start(svc_env, {"max_parallel_actions": 1})
    mark = svc_env.tmp / "marks"
    c = svc_env.connect()
    blocker = c.call("task.submit", {"prompt": f"sleep=1 mark={mark}"})
    wait_state(svc_env, blocker["taskId"], "running")
    ids = {pri: c.call("task.submit", {"prompt": f"pri{pri} mark={mark}", "priority": pri})["taskId"]
           for pri in (0, 10, -5, 5)}
    for tid in ids.values():
        wait_state(svc_env, tid, "completed")
    runs = list(c.call("task.list", {"limit": 10}))
    started = sorted(runs, key=lambda t: t["started_at"])
    assert [t["priority"] for t in started] == [0, 10, 5, 0, -5]
    assert started[0]["id"] == blocker["taskId"]
    assert max_overlap(marks(mark)) == 1
    c.close()


def test_reload_changes_the_concurrency_limit(svc_env: ServiceEnv) -> None:
    start(svc_env, {"max_parallel_actions": 1})
    mark = svc_env.tmp / "marks"
    ids = [svc_env.call("task.submit", {"prompt": f"sleep=1.5 mark={mark} n{i}"})["taskId"] for i in range(4)]
    wait_for(lambda: len(marks(mark)) >= 1, what="the first start")
    time.sleep(0.3)
    assert svc_env.call("task.stats")["running"] == 1
    write_service_config(svc_env, {"max_parallel_actions": 3})
    svc_env.ctl("reload", check=True)
    for tid in ids:
        wait_state(svc_env, tid, "completed")
    m = marks(mark)
    assert max_overlap(m) == 3  # the first one and the three it had been holding back... at most 3
    assert svc_env.call("task.stats")["max_parallel"] == 3


def test_per_project_cap_is_the_project_max_parallel_actions(svc_env: ServiceEnv) -> None:
    other = svc_env.tmp / "other"
    other.mkdir()
    svc_env.write_project_config({"daemon": {"max_parallel_actions": 1}})
    start(svc_env, {"max_parallel_actions": 3}, projects=[svc_env.project, other])
    mark = svc_env.tmp / "marks"
    ids = [svc_env.call("task.submit", {"prompt": f"sleep=0.6 mark={mark} n{i}", "project": str(svc_env.project)})
           ["taskId"] for i in range(3)]
    for tid in ids:
        wait_state(svc_env, tid, "completed")
    assert max_overlap(marks(mark)) == 1


def test_timeout_kills_grandchildren(tsvc: ServiceEnv) -> None:
    pidfile = tsvc.tmp / "gc.pid"
    t = tsvc.call("task.submit", {"prompt": f"spawn-grandchild ignore-term pidfile={pidfile} sleep=60",
                                  "timeout": 1})
    gc = read_pid(pidfile)
    try:
        done = wait_state(tsvc, t["taskId"], "timeout", "failed", "completed", timeout=30)
        assert done["state"] == "timeout" and "timed out after 1s" in done["error"]
        assert wait_for(lambda: not pid_alive(gc), 10), "the grandchild survived the timeout"
    finally:
        kill_quiet(gc)


def test_agents_get_a_normal_umask(svc_env: ServiceEnv) -> None:
    old = os.umask(0o077)  # what the unit's UMask= gives the service
    try:
        start(svc_env)
    finally:
        os.umask(old)
    t = svc_env.call("task.submit", {"prompt": "touch made-by-agent; umask", "agent": "sh", "wait": True})
    assert t["state"] == "completed" and t["result"] == "0022"
    assert stat.S_IMODE((svc_env.project / "made-by-agent").stat().st_mode) == 0o644
    assert stat.S_IMODE(Path(t["log_path"]).stat().st_mode) == 0o600  # the service's own files stay private


# -- crash recovery ------------------------------------------------------------------------------------------


def test_kill9_mid_task_then_restart(svc_env: ServiceEnv) -> None:
    """Agents outlive a kill -9 of the service: the restarted service re-adopts them and each
    completes once, with its real result; a task still queued runs after."""
    start(svc_env, {"max_parallel_actions": 2})
    runs = svc_env.tmp / "runs"
    gate = svc_env.tmp / "gate"
    wait_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    a = svc_env.call("task.submit", {"agent": "sh", "prompt": f"echo a >> {runs}; {wait_gate}; echo first run"})
    b = svc_env.call("task.submit", {"agent": "sh0", "prompt": f"echo b >> {runs}; {wait_gate}; exit 3"})
    queued = svc_env.call("task.submit", {"agent": "sh", "prompt": "echo was queued", "priority": -1})["taskId"]
    wait_for(lambda: runs.exists() and len(runs.read_text().split()) == 2, 20, what="both agents running")
    assert svc_env.proc is not None
    svc_env.proc.send_signal(signal.SIGKILL)
    svc_env.proc.wait(10)
    svc_env.start()
    ta = svc_env.call("task.get", {"taskId": a["taskId"]})
    assert ta["state"] == "running" and ta["adopted"] == 1
    assert svc_env.call("task.get", {"taskId": queued})["state"] == "queued"  # the limit counts adopted runs
    gate.touch()
    t1 = wait_state(svc_env, a["taskId"], "completed")
    assert t1["result"] == "first run" and t1["attempts"] == 1 and t1["interruptions"] == 0
    t2 = wait_state(svc_env, b["taskId"], "failed")
    assert t2["error"] == "exit code 3" and t2["exit_code"] == 3
    t3 = wait_state(svc_env, queued, "completed")
    assert t3["result"] == "was queued"
    assert sorted(runs.read_text().split()) == ["a", "b"]  # nothing ran twice
    assert svc_env.stop() == 0
    db = sqlite3.connect(svc_env.state_dir / "tasks.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


# -- config -----------------------------------------------------------------------------------------------


def test_invalid_agent_profile_is_reported_with_its_path(tsvc: ServiceEnv) -> None:
    tsvc.write_project_config({"agents": {"lint": {"kind": "claude", "max_turns": 0}}})
    res = tsvc.ctl("reload")
    assert res.returncode == 1
    assert ".aiwg/daemon.json: agents.lint.max_turns: 0 must be >= 1" in res.stderr
    tsvc.write_project_config({"agents": {"lint": {"kind": "command", "command": ["lint"]}}})
    res = tsvc.ctl("reload")
    assert "agents.lint.command: must contain {prompt}" in res.stderr
    # a project profile overrides a service one for that project only
    tsvc.write_project_config({"agents": {"sh": {"kind": "command", "command": ["/bin/echo", "proj", "{prompt}"]}}})
    tsvc.ctl("reload", check=True)
    t = tsvc.call("task.submit", {"prompt": "hi", "agent": "sh", "wait": True})
    assert t["result"] == "proj hi"


# -- aiwgctl --------------------------------------------------------------------------------------------------


def test_cli_submit_wait_exit_codes(tsvc: ServiceEnv) -> None:
    ok = tsvc.ctl("task", "submit", "hello there", "--wait")
    assert ok.returncode == 0, ok.stderr
    assert "Working on it." in ok.stdout and "→ Bash: ls" in ok.stdout and "✓ done" in ok.stdout
    assert '"type"' not in ok.stdout  # readable, not raw stream-json
    assert tsvc.ctl("task", "submit", "boom fail", "--wait").returncode == 1
    to = tsvc.ctl("task", "submit", "sleep=30", "--timeout", "0.5", "--wait")
    assert to.returncode == 124 and "timeout" in to.stderr
    res = tsvc.ctl("task", "submit", "echo hi", "--agent", "sh", "--wait", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["result"] == "hi"
    p = subprocess.Popen([str(BIN / "aiwgctl"), "task", "submit", "sleep=30", "--wait"], env=tsvc.env,
                         cwd=tsvc.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running = wait_for(lambda: tsvc.call("task.list", {"state": "running"}), what="a running task")
    cancel = tsvc.ctl("task", "cancel", running[0]["id"], check=True)
    assert "cancelling" in cancel.stdout
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "Traceback" not in err


def test_cli_list_get_cancel_stats_logs(tsvc: ServiceEnv) -> None:
    tid = tsvc.ctl("task", "submit", "echo one; echo two", "--agent", "sh", check=True).stdout.strip()
    wait_state(tsvc, tid, "completed")
    q = tsvc.call("task.submit", {"prompt": "sleep=30"})["taskId"]
    out = tsvc.ctl("task", "list", check=True).stdout
    assert out.splitlines()[0].split()[:5] == ["ID", "STATE", "AGENT", "PRI", "AGE"] and tid in out
    assert json.loads(tsvc.ctl("task", "list", "--state", "completed", "--json", check=True).stdout)[0][
        "id"] == tid
    assert "no tasks" in tsvc.ctl("task", "list", "--state", "timeout", check=True).stdout
    assert tsvc.ctl("task", "list", "--state", "bogus").returncode == 1
    got = tsvc.ctl("task", "get", tid, check=True).stdout
    assert "completed" in got and "one\ntwo" in got
    assert json.loads(tsvc.ctl("task", "get", tid, "--json", check=True).stdout)["state"] == "completed"
    missing = tsvc.ctl("task", "get", "t-nope")
    assert missing.returncode == 1 and "t-nope" in missing.stderr
    assert tsvc.ctl("task", "logs", tid, check=True).stdout == "one\ntwo\n"
    assert json.loads(tsvc.ctl("task", "logs", tid, "--json", check=True).stdout)["data"] == "one\ntwo\n"
    assert tsvc.ctl("task", "logs", tid, "-f", check=True).stdout == "one\ntwo\n"
    wait_state(tsvc, q, "running")
    assert json.loads(tsvc.ctl("task", "cancel", q, "--json", check=True).stdout)["cancelled"] is True
    wait_state(tsvc, q, "cancelled")
    again = tsvc.ctl("task", "cancel", q)
    assert again.returncode == 1 and "already cancelled" in again.stderr
    st = tsvc.ctl("task", "stats", check=True).stdout
    assert "completed:" in st and "cost:" in st
    js = json.loads(tsvc.ctl("task", "stats", "--json", check=True).stdout)
    assert js["completed"] == 1 and js["cancelled"] == 1 and js["total"] == 2
