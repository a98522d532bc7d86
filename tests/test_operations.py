"""Changes belong to the service: a client that hangs up loses only its reply, and a change a subsystem
refuses is rolled back everywhere (the real service in the foreground; under systemd in
test_operations_systemd.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from pathlib import Path

from service_fixture import ServiceEnv, wait_for
from webhook_support import SECRETS, free_port, github_headers, post

WORKTREE = str(Path(__file__).resolve().parent.parent)


def write_service_config(env: ServiceEnv, data: dict) -> None:
    path = env.config_home / "aiwg" / "daemon.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def send_and_hang_up(env: ServiceEnv, method: str, params: dict | None = None) -> None:
    """Send one request and close at once, as a Ctrl-C'd aiwgctl does: the handler is cancelled."""
    msg = {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params else {})}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(env.socket))
        s.sendall(json.dumps(msg).encode() + b"\n")


def test_a_reload_whose_caller_hangs_up_still_happens(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env.update(SECRETS)
    env.write_project_config({"watch": {"paths": []}, "schedule": {"jobs": []}})
    env.start()
    assert env.call("daemon.status")["subsystems"]["webhooks"].get("listening") is None
    port = free_port()
    # a project's hook takes its secret from a variable the service-wide file names (the policy gate)
    write_service_config(env, {"webhook": {"port": port, "secret_vars": ["AIWG_TEST_GH"]}})
    env.write_project_config({"watch": {"paths": []}, "schedule": {"jobs": []},
                              "webhook": {"hooks": [{"id": "gh", "kind": "github", "secret_env": "AIWG_TEST_GH"}]}})
    send_and_hang_up(env, "daemon.reload")
    st = wait_for(lambda: (s := env.call("daemon.status"))["subsystems"]["webhooks"].get("listening") and s, 20,
                  what="the webhook listener the reload configured")
    assert st["config"]["ok"] is True and st["config"]["time"]
    assert st["operations"]["current"] is None
    # really serving: a signed delivery is accepted and published
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    status, _ = post(port, "/hooks/gh", body, github_headers(SECRETS["AIWG_TEST_GH"], body, str(uuid.uuid4())))
    assert status in (200, 202), status
    wait_for(lambda: env.call("events.list", {"type": "webhook.github"})["events"], what="the webhook event")
    log = env.log_text()
    assert "reloaded: 1 project" in log and "Traceback" not in log
    assert env.stop() == 0


def test_a_project_add_whose_caller_hangs_up_is_registered(svc_env: ServiceEnv, tmp_path: Path) -> None:
    env = svc_env
    env.start()
    other = tmp_path / "other"
    other.mkdir()
    send_and_hang_up(env, "project.add", {"path": str(other)})
    wait_for(lambda: str(other) in [p["path"] for p in env.call("project.list")["projects"]], 20,
             what="the project the hung-up client added")
    reg = json.loads((env.state_dir / "projects.json").read_text())
    assert str(other) in reg["projects"]
    assert env.stop() == 0


def test_a_reload_a_subsystem_refuses_restores_the_old_config_everywhere(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["AIWG_FAULTS"] = "reload.apply=supervisor"  # the third subsystem with an apply
    env.start()
    before = env.call("daemon.status")
    old_max = before["subsystems"]["supervisor"]["max_parallel"]
    # executors (applied before the supervisor) and the supervisor's limit both change
    write_service_config(env, {"daemon": {"max_parallel_actions": old_max + 3},
                               "executors": {"far": {"kind": "ssh", "host": "far.invalid",
                                                     "connect_timeout_seconds": 1}}})
    c = env.connect()
    try:
        reply = c.request("daemon.reload")
    finally:
        c.close()
    err = reply["error"]
    assert "reload failed in supervisor" in err["message"] and "previous config was restored" in err["message"]
    assert err["data"]["rolled_back"] is True
    st = env.call("daemon.status")
    assert st["config"]["ok"] is False and st["config"]["rolled_back"] is True
    assert "last reload failed" in st["status"]
    assert st["subsystems"]["supervisor"]["max_parallel"] == old_max
    assert "far" not in {e["name"] for e in env.call("executors.list")["executors"]}
    assert "injected fault" in env.log_text()
    # aiwgctl says so, without a traceback
    res = env.ctl("reload")
    assert res.returncode != 0 and "reload failed in supervisor" in res.stderr
    assert env.stop() == 0


def test_a_project_add_a_subsystem_refuses_changes_nothing(svc_env: ServiceEnv, tmp_path: Path) -> None:
    env = svc_env
    env.env["AIWG_FAULTS"] = "project.add.apply=watcher"
    env.start()
    other = tmp_path / "other"
    other.mkdir()
    c = env.connect()
    try:
        reply = c.request("project.add", {"path": str(other)})
    finally:
        c.close()
    assert "project.add" in reply["error"]["message"] and "nothing changed" in reply["error"]["message"]
    assert str(other) not in [p["path"] for p in env.call("project.list")["projects"]]
    reg = env.state_dir / "projects.json"
    assert not reg.exists() or str(other) not in json.loads(reg.read_text())["projects"]
    assert str(other) not in env.call("daemon.status")["subsystems"]["watcher"].get("roots", {})
    assert env.stop() == 0


def test_sighup_reload_errors_are_logged_and_sighup_is_ignored_while_stopping(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["AIWG_FAULTS"] = "reload.apply=supervisor"
    env.start()
    assert env.proc is not None
    os.kill(env.proc.pid, signal.SIGHUP)
    wait_for(lambda: "supervisor refused the new config" in env.log_text(), 20, what="the SIGHUP reload's error")
    assert env.call("daemon.status")["config"]["rolled_back"] is True
    env.proc.send_signal(signal.SIGTERM)
    env.proc.send_signal(signal.SIGHUP)
    assert env.proc.wait(30) == 0
    log = env.log_text()
    assert "never retrieved" not in log and "Traceback" not in log.split("injected fault")[-1]
