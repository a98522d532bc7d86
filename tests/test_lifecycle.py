"""Start, reload, stop, one instance per user, state files, and running as PID 1 in a container."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from service_fixture import BIN, ServiceEnv, wait_for


def test_first_start_writes_default_config_and_links_socket(service: ServiceEnv) -> None:
    cfg = json.loads((service.project / ".aiwg" / "daemon.json").read_text())
    assert cfg["schedule"]["jobs"][0]["id"] == "health-check"
    link = service.project / ".aiwg" / "daemon" / "daemon.sock"
    # the project's own socket, 0600 in the service's private runtime directory
    target = Path(os.readlink(link))
    assert link.is_symlink() and target.parent == service.socket.parent / "p" and target.is_socket()
    assert target.stat().st_mode & 0o777 == 0o600 and target.parent.stat().st_mode & 0o777 == 0o700
    # an AIWG tool that only knows the project path reaches the service through the link, about that project
    from service_fixture import RpcConn

    c = RpcConn(link)
    assert c.call("ping")["pong"] is True
    assert c.call("daemon.status")["project"] == str(service.project)


def test_sigterm_stops_cleanly_and_persists_state(service: ServiceEnv) -> None:
    assert service.stop(signal.SIGTERM) == 0
    state = json.loads((service.state_dir / "state.json").read_text())
    assert state["running"] is False
    assert state["projects"][0]["path"] == str(service.project)
    assert not service.socket.exists()  # our own socket is removed; systemd's would be kept
    assert "stopped" in service.log_text()


def test_sigint_stops_too(service: ServiceEnv) -> None:
    assert service.stop(signal.SIGINT) == 0


def test_second_instance_is_refused(service: ServiceEnv) -> None:
    second = subprocess.run([str(BIN / "aiwg-service"), "run", "--project", str(service.project)],
                            env=service.env, capture_output=True, text=True, timeout=20)
    assert second.returncode == 1
    assert "already running for this user" in second.stderr
    assert f"pid {service.proc.pid}" in second.stderr  # type: ignore[union-attr]
    assert service.call("ping")["pong"] is True  # the first is untouched


def test_lock_is_released_by_a_crash(service: ServiceEnv) -> None:
    """Unlike a marker file, a kill -9 leaves no stale lock: the next start just works."""
    service.stop(signal.SIGKILL)
    service.start()
    assert service.call("ping")["pong"] is True


def test_state_and_heartbeat_files(svc_env: ServiceEnv) -> None:
    (svc_env.config_home / "aiwg").mkdir(parents=True)
    (svc_env.config_home / "aiwg" / "daemon.json").write_text(json.dumps({"daemon": {"heartbeat_interval_seconds": 1}}))
    svc_env.start()
    hb = svc_env.state_dir / "heartbeat"
    first = wait_for(lambda: hb.exists() and hb.stat().st_mtime_ns, what="heartbeat file")
    wait_for(lambda: hb.stat().st_mtime_ns > first, timeout=5, what="heartbeat to be touched again")
    state = json.loads((svc_env.state_dir / "state.json").read_text())
    assert state["pid"] == svc_env.proc.pid  # type: ignore[union-attr]
    assert state["running"] is True and state["uptime_seconds"] >= 0
    assert set(state["subsystems"]) == {"router", "store", "budgets", "executors", "supervisor", "automation",
                                        "chat", "ipc", "watcher", "scheduler", "webhooks", "messaging", "web"}
    # atomic writes leave no temp files (one may exist for the instant of a write: it must go away)
    wait_for(lambda: not list(svc_env.state_dir.glob(".*.tmp")), what="no temp file left in the state dir")


def test_invalid_config_at_start_fails_its_project_only(svc_env: ServiceEnv) -> None:
    """A project's bad file fails that project (listed with the reason); only the service file stops it (78)."""
    svc_env.write_project_config({"watch": {"paths": [{"path": "src/", "events": ["modfy"]}]}})
    svc_env.start()
    (failed,) = svc_env.call("project.list")["projects"]
    assert failed["state"] == "failed" and failed["served"] is False
    msg = f'{svc_env.project}/.aiwg/daemon.json: watch.paths[0].events[0]: "modfy" is not one of create, modify, delete'
    assert msg in failed["reason"] and msg in svc_env.log_text()  # the error names which project's file
    st = svc_env.call("daemon.status")
    assert st["health"] == "degraded" and any("failed" in i and msg in i for i in st["issues"])
    svc_env.stop()
    (svc_env.config_home / "aiwg").mkdir(parents=True)
    (svc_env.config_home / "aiwg" / "daemon.json").write_text('{"daemon": {"max_parallel_actions": 0}}')
    proc = svc_env.start(wait=False)
    assert proc.wait(20) == 78
    assert "daemon.max_parallel_actions" in svc_env.log_text()
    assert "Traceback" not in svc_env.log_text()


def test_reload_good_and_bad(service: ServiceEnv) -> None:
    # good: SIGHUP picks up the change
    service.write_project_config({"watch": {"debounce_ms": 100}, "extra_key": 1})
    service.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "reloaded" in service.log_text(), what="reload via SIGHUP")
    st = service.call("daemon.status")
    assert st["config"]["ok"] is True
    assert any("extra_key: unknown key" in w for w in st["config"]["warnings"])
    # bad: refused over RPC, reported to the caller and in daemon.status, old config keeps serving
    service.write_project_config({"daemon": {"max_parallel_actions": "three"}})
    c = service.connect()
    reply = c.request("daemon.reload")
    assert reply["error"]["code"] == -32001
    assert any("daemon.max_parallel_actions: must be an integer" in e for e in reply["error"]["data"]["errors"])
    st = service.call("daemon.status")
    assert st["config"]["ok"] is False and "daemon.max_parallel_actions" in st["config"]["errors"][0]
    assert "last reload refused" in st["status"]
    assert service.call("ping")["pong"] is True
    # bad via SIGHUP: still running
    service.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: service.log_text().count("reload refused") >= 2, what="second refusal")
    assert service.proc.poll() is None  # type: ignore[union-attr]


def test_projects_add_remove_persist(service: ServiceEnv, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    res = service.call("project.add", {"path": str(other)})
    assert res["added"] is True and res["project"]["persistent"] is True
    assert (other / ".aiwg" / "daemon.json").exists()
    assert (other / ".aiwg" / "daemon" / "daemon.sock").is_symlink()
    assert service.call("project.add", {"path": str(other)})["added"] is False
    paths = {p["path"] for p in service.call("project.list")["projects"]}
    assert paths == {str(service.project), str(other)}
    # survives a restart (and --project roots are only for that run)
    service.stop()
    service.start(projects=[])
    paths = {p["path"] for p in service.call("project.list")["projects"]}
    assert str(other) in paths
    assert service.call("project.remove", {"path": str(other)})["removed"] is True
    assert not (other / ".aiwg" / "daemon" / "daemon.sock").exists()
    service.stop()
    service.start("--registered", projects=[])
    assert service.call("project.list")["projects"] == []


def test_project_add_refuses_invalid_config(service: ServiceEnv, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    service.write_project_config({"watch": {"debounce_ms": -1}}, project=bad)
    reply = service.connect().request("project.add", {"path": str(bad)})
    assert reply["error"]["code"] == -32001
    assert "watch.debounce_ms: -1 must be >= 0" in reply["error"]["message"]
    assert str(bad) not in {p["path"] for p in service.call("project.list")["projects"]}


def test_log_file_rotates(svc_env: ServiceEnv) -> None:
    (svc_env.config_home / "aiwg").mkdir(parents=True)
    (svc_env.config_home / "aiwg" / "daemon.json").write_text(
        json.dumps({"daemon": {"log": {"max_size_mb": 1, "max_files": 2, "level": "debug"}}}))
    logfile = svc_env.tmp / "aiwg.log"
    svc_env.start("--log-file", str(logfile))
    # each refused reload logs a long line; enough of them to roll over twice
    # each error quotes the bad value: 100 errors of 5 kB each make ~0.5 MB of log per refused reload
    svc_env.write_project_config({"watch": {"paths": [{"path": "src", "events": ["x" * 5000] * 100}]}})
    c = svc_env.connect()
    for _ in range(8):
        c.request("daemon.reload")
    wait_for(lambda: Path(f"{logfile}.2").exists(), what="two rotated log files")
    assert not Path(f"{logfile}.3").exists()  # max_files honoured
    assert logfile.stat().st_size <= 1024 * 1024


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_runs_as_pid1_reaps_and_stops_on_sigterm(svc_env: ServiceEnv) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root for a PID namespace")
    # a PID namespace makes the service PID 1, as in a container
    cmd = ["unshare", "--pid", "--fork", "--kill-child", str(BIN / "aiwg-service"), "run", "--project",
           str(svc_env.project)]
    with open(svc_env.log, "ab") as logf:
        proc = subprocess.Popen(cmd, env=svc_env.env, stdout=logf, stderr=logf)
    svc_env.proc = proc
    svc_env.wait_ready()
    st = svc_env.call("daemon.status")
    assert st["pid"] == 2  # the service proper, under our tiny init at PID 1
    # an orphan re-parented to PID 1 is reaped, not left a zombie: spawn one inside the namespace
    init_pid = int(subprocess.check_output(["pgrep", "-P", str(proc.pid)], text=True).split()[0])
    subprocess.run(["nsenter", "-t", str(init_pid), "-p", "--", "sh", "-c", "sleep 0.1 & exit 0"], check=True)

    def reaped() -> bool:  # a zombie keeps its name: the orphan is gone only once init reaped it
        children = subprocess.run(["pgrep", "-P", str(init_pid), "-l"], capture_output=True, text=True).stdout
        return "sleep" not in children

    wait_for(reaped, 10, what="the orphan to be reaped by our init")
    os.kill(init_pid, signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_deleted_registered_project_does_not_stop_the_service(service: ServiceEnv, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    service.call("project.add", {"path": str(gone)})
    service.stop()
    shutil.rmtree(gone)
    service.start()
    paths = {p["path"] for p in service.call("project.list")["projects"]}
    assert str(gone) not in paths and str(service.project) in paths
    assert f"registered project {gone} no longer exists" in service.log_text()
