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


def _every_command(env: ServiceEnv, project: Path, other_tasks: set[str]) -> set[str]:
    """Every command of the stand-in AIWG client, in ``project``: each answer is about that project only."""
    # its stand-in's, not the service's (the socket answers a moment before the service is ready)
    pid = wait_for(lambda: pidfile.read(project), 15, what="the project's daemon.pid")
    assert pid != env.proc.pid  # type: ignore[union-attr]
    st = aiwg(env, "status", project=project)
    assert st.returncode == 0 and f"PID: {pid}" in st.stdout and "Health: healthy" in st.stdout
    assert "Automation: enabled (2 rules)" in st.stdout  # this project's: its rule + its health-check job
    assert "Scheduler: 1 jobs" in st.stdout
    sub = aiwg(env, "task", "submit", f"hello {project.name}", project=project)
    tid = sub.stdout.split("Task submitted: ")[1].split()[0]
    done = wait_state(env, tid, "completed")
    assert done["project"] == str(project)
    ctid = aiwg(env, "chat", "what", "changed?", project=project).stdout.split("Task: ")[1].split()[0]
    assert wait_state(env, ctid, "completed")["project"] == str(project)
    rows = aiwg(env, "task", "list", project=project).stdout.split()
    assert tid in rows and ctid in rows and not other_tasks & set(rows)
    got = json.loads(aiwg(env, "task", "get", tid, project=project).stdout)
    assert got["output"] == got["result"] and got["metadata"]["project"] == str(project) and got["createdAt"]
    for other in other_tasks:  # another project's task is not there for this project's clients
        assert aiwg(env, "task", "get", other, project=project).returncode == 1
        assert "Cancelled: false" in aiwg(env, "task", "cancel", other, project=project).stdout
    stats = json.loads(aiwg(env, "task", "stats", project=project).stdout)
    assert stats["completed"] == 2 and stats["total"] == 2
    repl = aiwg(env, "repl", "/status", "/run echo", "/tasks", "/quit", project=project)
    assert repl.returncode == 0 and "Task: t-" in repl.stdout
    rid = repl.stdout.split("Task: ")[1].split()[0]
    assert wait_state(env, rid, "completed")["project"] == str(project)
    assert "ts-review" in aiwg(env, "automation", "disable", "ts-review", project=project).stdout
    assert aiwg(env, "automation", "enable", project=project).returncode == 0
    return {tid, ctid, rid}


def test_two_projects_at_once_and_stop_in_one(svc_env: ServiceEnv, tmp_path: Path) -> None:
    """The AIWG CLI in each of two served projects: every command works unchanged, about its own project;
    its ``stop`` in one project stops serving that one only; in the last one, it stops the service."""
    a, b = svc_env.project, tmp_path / "second"
    b.mkdir()
    rules = {"rules": [{"id": "ts-review", "trigger": {"type": "file.modify"},
                        "action": {"type": "notify", "message": "x"}}]}
    for p in (a, b):
        svc_env.write_project_config(rules, project=p)
    start(svc_env, projects=[a, b])
    tasks_a = _every_command(svc_env, a, set())
    tasks_b = _every_command(svc_env, b, tasks_a)
    assert tasks_a.isdisjoint(tasks_b)

    stand_in = pidfile.read(a)
    stop = aiwg(svc_env, "stop", project=a)
    assert stop.returncode == 0 and "Daemon stopped" in stop.stdout
    wait_for(lambda: pidfile.read(a) is None, 15, what="a's daemon.pid to go")
    assert aiwg(svc_env, "status", project=a).stdout.strip() == "Daemon is not running"
    listed = {p["path"]: p for p in svc_env.call("project.list")["projects"]}
    assert listed[str(a)]["state"] == "stopped" and listed[str(b)]["state"] == "ok"
    # b is served on: with one project left, its daemon.pid is the service's own
    wait_for(lambda: pidfile.read(b) == svc_env.proc.pid, 15, what="b's daemon.pid to be the service's")  # type: ignore[union-attr]
    assert stand_in is not None and not os.path.exists(f"/proc/{stand_in}")
    st = aiwg(svc_env, "status", project=b)
    assert st.returncode == 0 and "Health: healthy" in st.stdout
    sub = aiwg(svc_env, "task", "submit", "still here", project=b)
    assert wait_state(svc_env, sub.stdout.split("Task submitted: ")[1].split()[0], "completed")["project"] == str(b)
    # aiwgctl project add serves a again
    svc_env.ctl("project", "add", str(a), check=True)
    wait_for(lambda: pidfile.read(a) not in (None, svc_env.proc.pid), 15, what="a's stand-in")  # type: ignore[union-attr]
    assert aiwg(svc_env, "status", project=a).returncode == 0
    svc_env.ctl("project", "remove", str(a), check=True)
    # stop in the last project stops the service, as with one project before
    assert aiwg(svc_env, "stop", project=b).returncode == 0
    assert svc_env.proc.wait(20) == 0  # type: ignore[union-attr]


def test_logs_follow_sees_a_rule_line_of_its_project_only(svc_env: ServiceEnv, tmp_path: Path) -> None:
    """``.aiwg/daemon/daemon.log``: that project's lines only, 0600; ``logs --follow`` (tail -f) sees a rule run."""
    a, b = svc_env.project, tmp_path / "second"
    b.mkdir()
    for p in (a, b):
        (p / "src").mkdir()
        svc_env.write_project_config({"watch": {"paths": [{"path": "src/"}], "debounce_ms": 50}, "rules": [
            {"id": f"note-{p.name}", "trigger": {"type": "file.create"},
             "action": {"type": "notify", "message": "saw {{payload.path}}"}}]}, project=p)
    start(svc_env, projects=[a, b])
    log_a = a / ".aiwg" / "daemon" / "daemon.log"
    wait_for(lambda: aiwg(svc_env, "logs", project=a).returncode == 0, 15, what="a's daemon.log")
    assert log_a.stat().st_mode & 0o777 == 0o600
    follow = subprocess.Popen([sys.executable, str(CLIENT), "--project", str(a), "logs", "--follow", "--lines", "5"],
                              stdout=subprocess.PIPE, text=True, env=svc_env.env)
    try:
        (a / "src" / "new.txt").write_text("x")
        (b / "src" / "other.txt").write_text("y")
        seen: list[str] = []

        def rule_line() -> bool:
            seen.append(follow.stdout.readline())  # type: ignore[union-attr]
            return "rule note-project" in seen[-1] and "saw src/new.txt" in seen[-1]

        wait_for(rule_line, 30, what="the rule's line through tail -f")
    finally:
        follow.kill()
        follow.wait(10)
    wait_for(lambda: "note-second" in (b / ".aiwg" / "daemon" / "daemon.log").read_text(), 15, what="b's rule line")
    assert "note-second" not in log_a.read_text() and str(b) not in log_a.read_text()
    last = aiwg(svc_env, "logs", "--lines", "1", project=a)
    assert last.returncode == 0 and len(last.stdout.splitlines()) == 1 and "rule note-project" in last.stdout
