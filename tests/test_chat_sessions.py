"""Interactive agent sessions and the dashboard: the real service, a real tmux server, real git worktrees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_fixture import BIN, ServiceEnv, wait_for
from test_chat_service import calls, error, start_chat_service
from tmux_support import Tmux


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def svc(svc_env: ServiceEnv) -> Iterator[ServiceEnv]:
    git(svc_env.project, "init", "-q", "-b", "main")
    (svc_env.project / "README").write_text("hi\n")
    (svc_env.project / ".gitignore").write_text("setup.txt\n.aiwg/\n")  # what a setup makes is ignored
    git(svc_env.project, "add", "README", ".gitignore")
    git(svc_env.project, "commit", "-q", "-m", "init")
    start_chat_service(svc_env)
    yield svc_env
    t = tmux_of(svc_env)
    t.kill()


def tmux_of(env: ServiceEnv) -> Tmux:
    return Tmux(env.runtime / "aiwg" / "tmux.sock", env.env)


def sessions(env: ServiceEnv, **params: Any) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in env.call("session.list", params)["sessions"]}


def wait_answer(env: ServiceEnv, sid: str, text: str) -> str:
    return wait_for(lambda: (s := env.call("session.capture", {"id": sid}))["state"] == "waiting for input"
                    and text in s["screen"] and s["screen"], 20, what=f"{text!r} in session {sid}")


def wait_ended(env: ServiceEnv, sid: str) -> dict[str, Any]:
    """Until the session's task records its end."""
    try:
        return wait_for(lambda: (t := env.call("task.get", {"taskId": sid}))["state"] != "running" and t, 20,
                        what=f"session {sid}'s end to be recorded")
    except AssertionError as exc:
        tm = tmux_of(env)
        panes = tm.run("list-panes", "-a", "-F", "#{session_name} #{pane_dead} #{pane_dead_status} #{pane_pid}",
                       check=False).stdout
        hooks = tm.run("show-hooks", "-t", f"=aiwg-{sid}:", check=False)
        raise AssertionError(f"{exc}\npanes: {panes}\nhooks: {hooks.stdout}{hooks.stderr}\n"
                             f"{env.log_text()[-3000:]}") from None


def wait_state(env: ServiceEnv, sid: str, state: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (s := sessions(env, all=True).get(sid)) and s["state"] == state and s, timeout,
                    interval=0.05, what=f"session {sid} to be {state}")


def test_session_lifecycle_state_from_the_pane_and_exit_status_recorded(svc: ServiceEnv) -> None:
    res = svc.call("session.new", {"prompt": "hello there", "agent": "reviewer"})
    sid = res["id"]
    assert res["taskId"] == sid and res["tmux"] == f"aiwg-{sid}"
    screen = wait_for(lambda: (s := svc.call("session.capture", {"id": sid}))["state"] == "waiting for input"
                      and "Done: hello there" in s["screen"] and s["screen"], 20, what="the first answer")
    assert "agent reviewer" in screen
    argv = calls(svc)[-1]["argv"]
    assert "-p" not in argv and argv[argv.index("--agent") + 1] == "reviewer" and argv[-1] == "hello there"
    task = svc.call("task.get", {"taskId": sid})
    assert task["state"] == "running" and task["source"] == "session"

    svc.call("session.send", {"id": sid, "text": "think hard sleep=3"})
    wait_state(svc, sid, "working")
    wait_answer(svc, sid, "Done: think hard")
    svc.call("session.send", {"id": sid, "text": "exit=3"})
    wait_state(svc, sid, "exited")
    t = wait_ended(svc, sid)
    assert t["state"] == "failed" and t["exit_code"] == 3 and t["error"] == "exit code 3"
    assert sid not in sessions(svc) and sessions(svc, all=True)[sid]["exit_status"] == 3
    log = Path(t["log_path"]).read_text()
    assert "Done: think hard sleep=3" in log and "> exit=3\n" in log
    assert svc.call("task.list", {"source": "session"})[0]["id"] == sid
    assert error(svc, "session.send", {"id": sid, "text": "x"})["data"]["param"] == "id"
    assert error(svc, "session.send", {"id": "t-nosuch", "text": "x"})["data"]["param"] == "id"


def test_worktree_sessions_setup_and_a_dirty_worktree_is_never_removed(svc: ServiceEnv) -> None:
    cfg = svc.project / ".aiwg" / "daemon.json"
    data = json.loads(cfg.read_text())
    data["sessions"] = {"worktree_setup": ["sh", "-c", 'echo "ready in $PWD" > setup.txt']}
    cfg.write_text(json.dumps(data))
    svc.trust()  # a setup command runs as the owner: it needs trust
    svc.call("daemon.reload")
    bad = error(svc, "session.new", {"worktree": "bad..name"})
    assert bad["code"] == -32602 and bad["data"]["param"] == "worktree" and "not a valid branch name" in bad["message"]

    res = svc.call("session.new", {"worktree": "feat/x", "prompt": "work here"})
    wt = Path(res["worktree"])
    assert res["branch"] == "feat/x" and res["cwd"] == str(wt) and wt.is_dir()
    assert (wt / "setup.txt").read_text().strip() == f"ready in {wt}"
    wait_answer(svc, res["id"], "Done: work here")
    assert calls(svc)[-1]["cwd"] == str(wt)
    assert "feat/x" in git(svc.project, "branch", "--list")
    dup = error(svc, "session.new", {"worktree": "feat/x"})
    assert "exists already" in dup["message"]

    (wt / "new.txt").write_text("precious\n")
    refused = error(svc, "session.kill", {"id": res["id"]})
    assert refused["data"]["param"] == "keep_worktree" and "?? new.txt" in refused["message"]
    assert sessions(svc)[res["id"]]["state"] == "waiting for input"  # nothing happened
    kept = svc.call("session.kill", {"id": res["id"], "keep_worktree": True})
    assert kept["killed"] and not kept["worktree_removed"] and (wt / "new.txt").exists()
    assert svc.call("task.get", {"taskId": res["id"]})["state"] == "cancelled"

    clean = svc.call("session.new", {"worktree": "feat/y"})
    wait_state(svc, clean["id"], "waiting for input")
    gone = svc.call("session.kill", {"id": clean["id"]})
    assert gone["worktree_removed"] and not Path(clean["worktree"]).exists()
    assert "feat/y" in git(svc.project, "branch", "--list")  # the branch (and its commits) stay
    # a second kill: the session had ended and its worktree is gone; nothing is said to be "kept at" it
    again = svc.ctl("session", "kill", clean["id"], check=True).stdout.strip()
    assert again == f"{clean['id']}: had already ended; its worktree is already gone (branch feat/y kept)", again
    assert svc.call("session.kill", {"id": clean["id"]})["was_running"] is False


def test_sessions_outlive_a_kill_9_and_a_restart_of_the_service(svc: ServiceEnv) -> None:
    sid = svc.call("session.new", {"prompt": "before"})["id"]
    wait_answer(svc, sid, "Done: before")
    svc.stop(signal.SIGKILL)
    svc.start()
    assert sessions(svc)[sid]["state"] == "waiting for input"
    svc.call("session.send", {"id": sid, "text": "after the restart"})
    wait_for(lambda: "Done: after the restart" in svc.call("session.capture", {"id": sid})["screen"], 20)
    assert svc.stop() == 0  # a graceful stop leaves it too
    svc.start()
    svc.call("session.send", {"id": sid, "text": "/exit"})
    wait_state(svc, sid, "exited")
    t = wait_ended(svc, sid)
    assert sessions(svc, all=True)[sid]["exit_status"] == 0
    assert t["state"] == "completed" and "Done: after the restart" in Path(t["log_path"]).read_text()


def test_dashboard_is_created_repaired_and_top_redraws_on_events(svc: ServiceEnv) -> None:
    tmux = tmux_of(svc)
    first = svc.ctl("attach", "--detach", "--name", "aiwg-daemon", check=True)  # the AIWG name
    assert "aiwg: created" in first.stdout
    assert "aiwg: running" in svc.ctl("attach", "--detach", check=True).stdout
    panes = tmux.run("list-panes", "-t", "=aiwg:", "-F", "#{pane_index} #{pane_current_command}").stdout
    assert len(panes.splitlines()) == 2
    bottom = "=aiwg:.{bottom}"
    wait_for(lambda: "aiwg top" in tmux.run("capture-pane", "-p", "-t", bottom).stdout, 20, what="top to draw")
    wait_for(lambda: "you>" in tmux.run("capture-pane", "-p", "-t", "=aiwg:.{top}").stdout, 20, what="the REPL")
    task = svc.call("task.submit", {"prompt": "echo hi", "agent": "shell"})
    wait_for(lambda: task["taskId"] in tmux.run("capture-pane", "-p", "-t", bottom).stdout, 20,
             what="top to show the new task")
    tmux.run("kill-pane", "-t", bottom)
    assert "aiwg: repaired" in svc.ctl("attach", "--detach", check=True).stdout
    assert len(tmux.run("list-panes", "-t", "=aiwg:").stdout.splitlines()) == 2
    res = svc.ctl("attach")  # no terminal here
    assert res.returncode == 1 and "needs a terminal" in res.stderr
    # a real terminal: a pane of another tmux server attaches to the dashboard, read-only
    outer = Tmux(svc.tmp / "outer.sock", {**svc.env, "TERM": "xterm-256color"})
    try:
        outer.new("term", [str(BIN / "aiwgctl"), "attach", "--read-only"], svc.project, width=120, height=40)
        clients = wait_for(lambda: tmux.run("list-clients", "-t", "=aiwg", "-F", "#{client_readonly}",
                                            check=False).stdout.split(), 20, what="a client on the dashboard")
        assert clients == ["1"]
        outer.wait("term", "aiwg top")  # the dashboard shows through the attached terminal
    finally:
        outer.kill()
    assert error(svc, "session.dashboard", {"name": "bad name!"})["data"]["param"] == "name"


def test_top_once_and_no_tmux_is_a_clear_error(svc_env: ServiceEnv) -> None:
    start_chat_service(svc_env)
    out = svc_env.ctl("top", "--once", check=True).stdout
    assert "RUNNING" in out and "QUEUED" in out and "cost today $0.0000" in out
    svc_env.stop()
    bare = svc_env.tmp / "bare"
    bare.mkdir()
    for tool in ("git", "sh", "systemd-run"):
        src = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if src:
            os.symlink(src, bare / tool)
    svc_env.env["PATH"] = f"{BIN}:{svc_env.tmp / 'bin'}:{bare}"
    svc_env.start()
    err = error(svc_env, "session.new", {"prompt": "x"})
    assert "tmux is not installed" in err["message"] and "apt-get install tmux" in err["message"]
    assert svc_env.call("task.list", {"source": "session"}) == []  # nothing half-made
