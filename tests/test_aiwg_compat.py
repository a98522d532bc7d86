"""The AIWG daemon's own clients, unchanged, against the real service: every command of the client contract
(``shared/reference/aiwg-client-contract.md``), run by ``tests/aiwg_client.py`` (written from that contract)
through the project's ``.aiwg/daemon.pid`` and ``.aiwg/daemon/daemon.sock`` link."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from service_fixture import ServiceEnv, wait_for
from test_tasks_api import start, wait_state

from aiwg_service import pidfile

CLIENT = Path(__file__).with_name("aiwg_client.py")


def aiwg(env: ServiceEnv, *args: str, project: Path | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, str(CLIENT), "--project", str(project or env.project), *args],
                         capture_output=True, text=True, timeout=60, env=env.env)
    assert "Traceback" not in res.stderr, res.stderr
    assert "undefined" not in res.stdout, res.stdout  # a field the AIWG CLI prints that we do not give
    return res


@pytest.fixture
def asvc(svc_env: ServiceEnv) -> ServiceEnv:
    svc_env.write_project_config({"rules": [
        {"id": "ts-review", "trigger": {"type": "file.modify"}, "action": {"type": "notify", "message": "x"}}]})
    return start(svc_env)


def test_every_contract_command(asvc: ServiceEnv) -> None:
    pid = asvc.proc.pid  # type: ignore[union-attr]
    assert pidfile.read(asvc.project) == pid
    assert (asvc.project / ".aiwg" / "daemon.pid").stat().st_mode & 0o777 == 0o600

    st = aiwg(asvc, "status")
    assert st.returncode == 0
    out = st.stdout
    assert f"PID: {pid}" in out and "Health: healthy" in out and "Max concurrent: 3" in out
    assert "IPC clients: 1" in out  # this very connection
    assert "Automation: enabled (2 rules)" in out  # ts-review + schedule:health-check and "Scheduler: 1 jobs" in out
    assert "File watcher: " in out and "events received" in out

    sub = aiwg(asvc, "task", "submit", "hello there", "--priority", "abc")  # parseInt -> null: the default
    assert sub.returncode == 0, sub.stdout
    tid = sub.stdout.split("Task submitted: ")[1].split()[0]
    assert wait_state(asvc, tid, "completed")["priority"] == 0

    # --agent names a Claude Code subagent: the claude profile runs it as `claude -p … --agent NAME`, the
    # prompt on stdin
    sub = aiwg(asvc, "task", "submit", "audit it", "--agent", "security-auditor", "--priority", "7")
    tid2 = sub.stdout.split("Task submitted: ")[1].split()[0]
    done = wait_state(asvc, tid2, "completed")
    assert done["agent"] == "claude" and done["subagent"] == "security-auditor" and done["priority"] == 7
    log = asvc.call("task.logs", {"taskId": tid2})["data"]
    argv = json.loads(log.splitlines()[0])["argv"]  # fake claude echoes its argv in the init line
    assert argv[argv.index("--agent") + 1] == "security-auditor" and "audit it" not in argv
    assert done["result"].startswith("Done: audit it")  # it reached the agent, on stdin
    bad = aiwg(asvc, "task", "submit", "x", "--agent=--dangerously-skip-permissions")
    assert bad.returncode == 1 and "nor a subagent name" in bad.stdout

    lst = aiwg(asvc, "task", "list", "--limit", "5")
    rows = [line.split("  ") for line in lst.stdout.splitlines()]
    assert [r[0] for r in rows] == [tid2, tid] and rows[0][1] == "completed" and rows[1][2] == "hello there"
    assert aiwg(asvc, "task", "list", "--state", "failed").stdout.strip() == "No tasks found"

    got = aiwg(asvc, "task", "get", tid)
    assert json.loads(got.stdout)["id"] == tid
    assert "Cancelled: false" in aiwg(asvc, "task", "cancel", tid).stdout  # finished: nothing to cancel
    queued = asvc.call("task.submit", {"prompt": "sleep=30"})["taskId"]
    assert "Cancelled: true" in aiwg(asvc, "task", "cancel", queued).stdout
    stats = json.loads(aiwg(asvc, "task", "stats").stdout)
    assert {"total", "queued", "running", "completed", "failed", "cancelled"} <= set(stats)

    chat = aiwg(asvc, "chat", "what", "changed?")
    ctid = chat.stdout.split("Task: ")[1].split()[0]
    assert wait_state(asvc, ctid, "completed")["source"] == "chat"

    repl = aiwg(asvc, "repl", "/help", "/status", "/run echo", "/tasks", "/history", "/quit")
    assert repl.returncode == 0 and "Health: healthy" in repl.stdout and "Task: t-" in repl.stdout

    # automation.enable/disable: unknown rule -> -32602 naming the rule; known one works
    assert "ts-review" in aiwg(asvc, "automation", "disable", "ts-review").stdout
    nope = aiwg(asvc, "automation", "enable", "no-such-rule")
    assert nope.returncode == 1 and "no-such-rule" in nope.stdout
    c = asvc.connect()
    err = c.request("automation.enable", {"ruleId": "no-such-rule"})["error"]
    assert err["code"] == -32602 and "no-such-rule" in err["message"] and err["data"]["param"] == "ruleId"

    # stop: SIGTERM to the pid in the file; then the file is gone and the CLI says so
    stop = aiwg(asvc, "stop")
    assert stop.returncode == 0 and asvc.proc.wait(20) == 0  # type: ignore[union-attr]
    assert not (asvc.project / ".aiwg" / "daemon.pid").exists()
    after = aiwg(asvc, "status")
    assert after.returncode == 1 and after.stdout.strip() == "Daemon is not running"


def test_state_json_fallback(asvc: ServiceEnv) -> None:
    """Without the socket, the AIWG CLI reads .aiwg/daemon/state.json: it holds the fields it prints."""
    link = asvc.project / ".aiwg" / "daemon" / "state.json"
    assert link.is_symlink()
    asvc.call("task.submit", {"prompt": "sleep=30"})
    wait_for(lambda: json.loads(link.read_text())["agents"]["running"] == 1, 15,
             what="state.json to count the running agent")
    st = json.loads(link.read_text())
    assert st["health"] == {"status": "healthy", "issues": []}
    assert st["monitors"]["scheduler"] == {"enabled": True, "jobs": 1}
    assert st["monitors"]["file_watcher"]["enabled"] is True
    assert st["started_at"] and st["uptime_seconds"] >= 0 and st["last_heartbeat"]
    sock_link = asvc.project / ".aiwg" / "daemon" / "daemon.sock"
    sock_link.unlink()  # the CLI cannot connect: it falls back to the file
    out = aiwg(asvc, "status")
    assert out.returncode == 0 and "from state file" in out.stdout and "Health: healthy" in out.stdout
    assert "Agents running: 1" in out.stdout and "Scheduler: true (1 jobs)" in out.stdout


def test_status_is_degraded_with_reasons(asvc: ServiceEnv) -> None:
    asvc.write_project_config("{ not json")
    assert asvc.ctl("reload").returncode == 1
    st = asvc.call("daemon.status")
    assert st["health"] == "degraded" and any("reload was refused" in i for i in st["issues"])


def test_stale_pid_files_never_block(svc_env: ServiceEnv) -> None:
    aiwg_dir = svc_env.project / ".aiwg"
    aiwg_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (aiwg_dir / "daemon.pid").write_text(f"{dead.pid}\n")  # a dead pid
    start(svc_env)
    assert pidfile.read(svc_env.project) == svc_env.proc.pid  # type: ignore[union-attr]
    assert aiwg(svc_env, "status").returncode == 0
    svc_env.stop()
    (aiwg_dir / "daemon.pid").write_text("1\n")  # alive, but not ours
    start(svc_env)
    assert pidfile.read(svc_env.project) == svc_env.proc.pid  # type: ignore[union-attr]
    # a pid file someone else rewrote meanwhile is theirs: stop leaves it alone
    (aiwg_dir / "daemon.pid").write_text("1\n")
    assert svc_env.stop() == 0
    assert (aiwg_dir / "daemon.pid").read_text() == "1\n"
    # and aiwgctl finds the service whatever the pid file says
    start(svc_env)
    (aiwg_dir / "daemon.pid").unlink()
    assert svc_env.ctl("ping").returncode == 0


def test_pid_file_write_never_follows_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".aiwg").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    (root / ".aiwg" / "daemon.pid").symlink_to(outside)
    pidfile.write(root)
    assert outside.read_text() == "precious\n"  # the link itself was replaced, not its target
    assert not (root / ".aiwg" / "daemon.pid").is_symlink() and pidfile.read(root) == os.getpid()
    assert pidfile.remove(root) and not (root / ".aiwg" / "daemon.pid").exists()
    other = tmp_path / "q"
    other.mkdir()
    (other / ".aiwg").symlink_to(tmp_path / "elsewhere-dir")
    (tmp_path / "elsewhere-dir").mkdir()
    with pytest.raises(OSError):
        pidfile.write(other)  # .aiwg itself a symlink: refused
    assert list((tmp_path / "elsewhere-dir").iterdir()) == []
    assert not list((root / ".aiwg").glob(".*.tmp"))


def test_aiwgctl_status_and_task_list_follow(asvc: ServiceEnv) -> None:
    t = asvc.call("task.submit", {"prompt": "x", "agent": "reviewer", "wait": True})
    out = asvc.ctl("task", "list", check=True).stdout
    assert t["id"] in out and "claude:reviewer" in out
    assert re.search(r"^health:\s+healthy$", asvc.ctl("status", check=True).stdout, re.M)
    os.kill(asvc.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
    assert asvc.proc.wait(20) == 0  # type: ignore[union-attr]


def test_an_aiwg_rules_agent_is_a_subagent(svc_env: ServiceEnv) -> None:
    """A rule written for the AIWG daemon names a Claude Code subagent in ``action.agent``: it runs."""
    svc_env.write_project_config({"rules": [{
        "id": "review-after-sh", "trigger": {"type": "task.completed"},
        "conditions": [{"field": "payload.agent", "operator": "eq", "value": "sh"}],
        "action": {"type": "agent", "agent": "code-reviewer", "prompt": "review {{payload.taskId}}"}}]})
    start(svc_env)
    t = svc_env.call("task.submit", {"prompt": "true", "agent": "sh", "wait": True})
    rule_task = wait_for(lambda: svc_env.call("task.list", {"source": "rule"}), 20, what="the rule's task")[0]
    assert rule_task["agent"] == "claude" and rule_task["subagent"] == "code-reviewer"
    assert rule_task["prompt"] == f"review {t['id']}"
    assert wait_state(svc_env, rule_task["id"], "completed")["result"].startswith("Done: review")
