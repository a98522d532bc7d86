"""The real ``aiwg-service`` under a real systemd user manager (see tests/systemd_env.py).

Unlike test_systemd_units.py (the unit files around a fake daemon), these run the shipped units with
ExecStart= pointing at *this* checkout's ``aiwg-service`` (a drop-in sets PYTHONPATH so the unit's process
imports the worktree, whatever is installed in the venv), and drive it the way users do: ``aiwgctl`` and
``systemctl --user``. One manager serves the whole session; every test removes its units.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_fixture import wait_for
from systemd_env import REPO_ROOT, UserManager

from aiwg_service.systemd import systemd_escape_path

BIN = Path(sys.executable).parent  # holds aiwg-service and aiwgctl (the venv's, or CI's .venv)
WATCHDOG_SEC = 2
TIMEOUT_ABORT_SEC = 10  # from the shipped unit

STATUS_RE = re.compile(r"^1 project( · \d+ running · \d+ queued)? · watching \d+ dirs?$")


def dropin(config_home: Path) -> str:
    """Test-only settings layered on the shipped units: import this checkout, private config, quick timers."""
    return (
        "[Service]\n"
        f"Environment=PYTHONPATH={REPO_ROOT} XDG_CONFIG_HOME={config_home}\n"
        f"WatchdogSec={WATCHDOG_SEC}s\n"
        "RestartSec=100ms\n"
    )


class Svc:
    """The manager plus helpers to talk to the real service the way users do."""

    def __init__(self, sd: UserManager, config_home: Path) -> None:
        self.sd = sd
        self.config_home = config_home
        self.socket = sd.runtime_dir / "aiwg" / "daemon.sock"
        self.env = {**sd.env, "PYTHONPATH": str(REPO_ROOT), "PATH": f"{BIN}:{sd.env['PATH']}"}

    def ctl(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``aiwgctl ARGS`` from the host (the runtime dir is shared, so the socket is reachable)."""
        res = subprocess.run([str(BIN / "aiwgctl"), *args], env=self.env, cwd=cwd or self.sd.home,
                             capture_output=True, text=True, timeout=60)
        assert "Traceback" not in res.stderr, res.stderr
        if check:
            assert res.returncode == 0, f"aiwgctl {' '.join(args)} -> {res.returncode}\n{res.stdout}{res.stderr}"
        return res

    def status(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        return json.loads(self.ctl(*args, "status", "--json", cwd=cwd).stdout)

    def show(self, *props: str, unit: str = "aiwg.service") -> dict[str, str]:
        return self.sd.show(unit, *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def journal(self, after: str | None = None, ident: str = "aiwg") -> list[dict[str, Any]]:
        """Records of *ident*, optionally only those after the cursor *after*.

        Filtered here, not with ``-t``: journalctl 252 combines ``--after-cursor`` with a match wrongly
        (it skips the first matching record when the cursor's own record does not match).
        """
        args = ["--after-cursor", after] if after else ["-t", ident]
        out = self.sd.journalctl("-o", "json", *args).stdout
        recs = [json.loads(line) for line in out.splitlines()]
        return [r for r in recs if r.get("SYSLOG_IDENTIFIER") == ident]

    def messages(self, after: str | None = None, ident: str = "aiwg") -> list[str]:
        return [str(r.get("MESSAGE", "")) for r in self.journal(after, ident)]

    def wait_message(self, pattern: str, after: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        rx = re.compile(pattern)
        return self.sd.wait_for(
            lambda: next((r for r in self.journal(after) if rx.search(str(r.get("MESSAGE", "")))), None),
            timeout=timeout, message=f"journal line /{pattern}/")

    def cursor(self) -> str:
        """Journal cursor now, so later checks see only what happened after it."""
        out = self.sd.journalctl("-n", "0", "--show-cursor").stdout
        return out.strip().rsplit("cursor: ", 1)[-1]


@pytest.fixture
def svc(sd: UserManager, tmp_path: Path) -> Iterator[Svc]:
    """Shipped units (+ test drop-in) installed; service state from earlier tests wiped."""
    for d in (sd.config_home / "aiwg", sd.state_home / "aiwg"):  # StateDirectory= (252: under config_home)
        shutil.rmtree(d, ignore_errors=True)
    config_home = tmp_path / "config"
    config_home.mkdir()
    for unit in ("aiwg.service", "aiwg@.service"):
        sd.install_unit_text(f"{unit}.d/test.conf", dropin(config_home))
    sd.install_units(BIN)
    yield Svc(sd, config_home)


@pytest.fixture
def project() -> Iterator[Path]:
    """A short project path under /tmp (instance socket names must fit in sun_path)."""
    path = Path(tempfile.mkdtemp(prefix="aiwgp", dir="/tmp"))
    (path / "src").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ping_raw(path: Path, timeout: float = 20.0) -> dict[str, Any]:
    """One ping on a fresh connection, as aiwgctl does, without aiwgctl's process start-up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        return json.loads(s.makefile("rb").readline())


# --------------------------------------------------------------------------- activation, READY, STATUS


def test_socket_activation_on_first_connect(svc: Svc) -> None:
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    assert svc.show("ActiveState", unit="aiwg.socket")["ActiveState"] == "active"
    assert svc.show("ActiveState")["ActiveState"] == "inactive"
    assert svc.socket.is_socket() and oct(svc.socket.stat().st_mode & 0o777) == "0o600"

    res = svc.ctl("ping")  # the first connect starts the service; the request waits in the backlog
    assert res.stdout.startswith(f"pong from {svc.socket}")
    # ping answers as soon as the config is loaded; READY=1 (active) follows once every subsystem started
    svc.sd.wait_for(lambda: svc.show("ActiveState")["ActiveState"] == "active", timeout=20, message="active")
    props = svc.show("ActiveState", "MainPID")
    assert props["ActiveState"] == "active"
    st = svc.status()
    assert st["socket_activated"] is True
    assert st["pid"] == int(props["MainPID"])
    assert st["projects"] == []  # --registered: nothing registered, and never the cwd ($HOME)
    # The unit's process runs this checkout, not whatever the venv has installed.
    ready = svc.wait_message(r"^aiwg-service .* ready")
    assert ready["CODE_FILE"].startswith(str(REPO_ROOT / "aiwg_service")), ready["CODE_FILE"]
    assert ready["_SYSTEMD_UNIT"] == "aiwg.service"


def test_ready_only_after_startup(svc: Svc) -> None:
    """Type=notify: `active` means READY=1 came, and by then every subsystem is up and the socket served."""
    svc.sd.systemctl("start", "--no-block", "aiwg.service", check=True)
    seen: set[str] = set()

    def active() -> bool:
        state = svc.show("ActiveState")["ActiveState"]
        seen.add(state)
        return state == "active"

    svc.sd.wait_for(active, timeout=20, interval=0.01, message="aiwg.service active")
    st = json.loads(svc.ctl("status", "--json").stdout)  # right away: no retry needed
    assert set(st["subsystems"]) >= {"router", "ipc", "watcher", "scheduler"}, st["subsystems"]
    assert st["subsystems"]["watcher"]["running"] is True
    props = svc.show("ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    startup = int(props["ActiveEnterTimestampMonotonic"]) - int(props["ExecMainStartTimestampMonotonic"])
    assert startup > 0, props  # active only once READY=1 arrived, not when the process was forked
    assert seen <= {"inactive", "activating", "active"}, seen


def test_status_text_and_registered_projects(svc: Svc, project: Path) -> None:
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    svc.ctl("project", "add", str(project))
    svc.sd.wait_for(lambda: STATUS_RE.match(svc.show("StatusText")["StatusText"]), timeout=5,
                    message="StatusText with one project")
    # --registered: after a restart the registered project is served again, and only it.
    svc.sd.systemctl("restart", "aiwg.service", check=True)
    assert [p["path"] for p in svc.status()["projects"]] == [str(project)]
    assert STATUS_RE.match(svc.show("StatusText")["StatusText"])


# --------------------------------------------------------------------------- reload


def test_reload_good_then_bad_config(svc: Svc, project: Path) -> None:
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    svc.ctl("project", "add", str(project))
    cfg_file = project / ".aiwg" / "daemon.json"
    cfg = json.loads(cfg_file.read_text())

    def specs() -> list[str]:
        roots = svc.status()["subsystems"]["watcher"]["roots"]
        return [s["path"] for s in roots[str(project)]["specs"]]

    assert "docs/" not in specs()
    pid = svc.main_pid()

    # Good config: `systemctl reload` returns only after RELOADING=1 ... READY=1, i.e. after the reload.
    cfg["watch"]["paths"].append({"path": "docs/", "events": ["modify"]})
    cfg_file.write_text(json.dumps(cfg))
    cursor = svc.cursor()
    svc.sd.systemctl("reload", "aiwg.service", check=True)
    # journald stores the line a moment after the service wrote it (before READY=1): wait for it
    wait_for(lambda: any(m.startswith("reloaded: 1 project") for m in svc.messages(cursor)),
             what="the reload's journal line")
    st = svc.status()
    assert st["config"]["ok"] is True and st["config"]["time"]
    assert "docs/" in specs()
    assert svc.show("ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"}

    # Bad config: refused, the service stays up on the old config; the error shows everywhere.
    cfg_file.write_text('{"watch": {"debounce_ms": "soon"}}')
    cursor = svc.cursor()
    svc.sd.systemctl("log-level", "debug", check=True)  # the manager then logs each notify message
    try:
        svc.sd.systemctl("reload", "aiwg.service", check=True)
    finally:
        svc.sd.systemctl("log-level", "info", check=True)
    manager = "\n".join(svc.messages(cursor, ident="systemd"))
    assert re.search(r"\(RELOADING=1, MONOTONIC_USEC=\d+", manager), manager  # then READY=1, even refused:
    assert manager.index("RELOADING=1") < manager.rindex("READY=1")
    refused = [r for r in svc.journal(cursor) if "reload refused" in r["MESSAGE"]]
    assert refused and refused[0]["PRIORITY"] == "3", refused
    assert "debounce_ms" in refused[0]["MESSAGE"]
    props = svc.show("ActiveState", "SubState", "StatusText", "MainPID")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    assert int(props["MainPID"]) == pid
    assert "reload refused" in props["StatusText"], props
    st = svc.status()
    assert st["config"]["ok"] is False
    assert any("debounce_ms" in e for e in st["config"]["errors"])
    assert "docs/" in specs()  # the old (good) config keeps running
    # aiwgctl reload reports the same refusal with a non-zero exit.
    res = svc.ctl("reload", check=False)
    assert res.returncode == 1 and "reload refused" in res.stderr and "debounce_ms" in res.stderr


# --------------------------------------------------------------------------- watchdog, crashes, restarts


def test_watchdog_restarts_a_hung_service(svc: Svc) -> None:
    svc.sd.systemctl("start", "aiwg.service", check=True)
    old = svc.main_pid()
    # Alive past WatchdogSec: the event loop really pets the watchdog under systemd.
    time.sleep(WATCHDOG_SEC * 1.5)
    assert svc.show("MainPID", "NRestarts", "ActiveState") == {
        "MainPID": str(old), "NRestarts": "0", "ActiveState": "active"}

    os.kill(old, signal.SIGSTOP)  # a wedged loop: no more WATCHDOG=1
    t0 = time.monotonic()
    props = svc.sd.wait_for(
        lambda: (p := svc.show("MainPID", "NRestarts", "ActiveState"))["NRestarts"] == "1"
        and p["ActiveState"] == "active" and p,
        timeout=WATCHDOG_SEC + TIMEOUT_ABORT_SEC + 5, interval=0.1, message="watchdog restart")
    elapsed = time.monotonic() - t0
    assert int(props["MainPID"]) != old
    assert elapsed < WATCHDOG_SEC + TIMEOUT_ABORT_SEC + 5
    assert "aiwg.service: Watchdog timeout" in svc.sd.journalctl("-o", "cat", "-t", "systemd").stdout
    assert ping_raw(svc.socket)["result"]["pong"] is True


class PingLoop(threading.Thread):
    """Ping continuously, a new connection each time, recording every failure with the phase it hit.

    *via_aiwgctl*: go through ``aiwg_service.cli.core.call`` (what ``aiwgctl ping`` runs, in-process so the
    loop is fast), which resends a read-only request once if the service died holding it. Otherwise a
    bare socket: what any client gets from the socket unit alone.
    """

    def __init__(self, path: Path, via_aiwgctl: bool) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.via_aiwgctl = via_aiwgctl
        self.ok = 0
        self.failures: list[str] = []
        self.halt = threading.Event()
        self.phase = "start"

    def ping(self) -> bool:
        if not self.via_aiwgctl:
            return ping_raw(self.path)["result"]["pong"] is True
        from aiwg_service.cli import core

        return core.call("ping", timeout=20)["pong"] is True

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                assert self.ping()
                self.ok += 1
            except Exception as exc:  # CliExit (aiwgctl gave up) included
                self.failures.append(f"{self.phase}: {type(exc).__name__}: {exc}")

    def __enter__(self) -> PingLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(30)


def test_no_request_lost_across_kill_and_restart(svc: Svc, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiwg_service.cli import core

    monkeypatch.setattr(core.options, "socket", svc.socket)
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    assert ping_raw(svc.socket)["result"]["pong"] is True
    with PingLoop(svc.socket, via_aiwgctl=False) as raw, PingLoop(svc.socket, via_aiwgctl=True) as ctl:
        loops = (raw, ctl)

        def flowing(n: int = 50) -> None:
            seen = [lp.ok for lp in loops]
            svc.sd.wait_for(lambda: all(lp.ok > s + n for lp, s in zip(loops, seen, strict=True)),
                            message="pings flowing")

        flowing()
        old = svc.main_pid()
        raw.phase = ctl.phase = "kill -9"
        os.kill(old, signal.SIGKILL)
        props = svc.sd.wait_for(
            lambda: (p := svc.show("MainPID", "NRestarts", "ActiveState"))["ActiveState"] == "active"
            and p["MainPID"] not in ("0", str(old)) and p, timeout=20, message="restart after kill -9")
        assert props["NRestarts"] == "1"
        flowing()

        pid = int(props["MainPID"])
        raw.phase = ctl.phase = "restart"
        svc.sd.systemctl("restart", "aiwg.service", check=True)
        assert svc.main_pid() != pid
        flowing()
    # aiwgctl's client loses nothing. A bare client can lose only the one request the killed process had
    # already accepted (the socket itself stays up); a graceful restart answers everything.
    assert ctl.failures == [], ctl.failures
    assert len(raw.failures) <= 1 and all(f.startswith("kill -9: ") for f in raw.failures), raw.failures
    assert raw.ok > 150 and ctl.ok > 150


def test_stop_is_clean(svc: Svc) -> None:
    svc.sd.systemctl("start", "aiwg.service", check=True)
    cursor = svc.cursor()
    svc.sd.systemctl("log-level", "debug", check=True)  # the manager then logs each notify message
    try:
        svc.sd.systemctl("stop", "aiwg.service", check=True)
    finally:
        svc.sd.systemctl("log-level", "info", check=True)
    props = svc.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0", "ExecMainCode": "1"}
    msgs = svc.messages(cursor)
    assert "stopping" in msgs and "stopped" in msgs
    manager = "\n".join(svc.messages(cursor, ident="systemd"))
    assert re.search(r"aiwg.service: Got notification message from PID \d+ \(STOPPING=1", manager), manager
    assert "EXTEND_TIMEOUT_USEC=" in manager
    assert "aiwg.service: Changed running -> stop-sigterm" in manager  # i.e. deactivating


def test_sigterm_from_outside_stops_via_stopping(svc: Svc) -> None:
    """A SIGTERM not from systemctl: STOPPING=1 puts the unit in deactivating; exit 0 means no restart."""
    svc.sd.systemctl("start", "aiwg.service", check=True)
    cursor = svc.cursor()
    svc.sd.systemctl("log-level", "debug", check=True)
    try:
        os.kill(svc.main_pid(), signal.SIGTERM)
        svc.sd.wait_for_state("aiwg.service", "inactive")
    finally:
        svc.sd.systemctl("log-level", "info", check=True)
    manager = "\n".join(svc.messages(cursor, ident="systemd"))
    assert "aiwg.service: Changed running -> stop-sigterm" in manager, manager
    props = svc.show("Result", "ExecMainStatus", "NRestarts")
    assert props == {"Result": "success", "ExecMainStatus": "0", "NRestarts": "0"}


# --------------------------------------------------------------------------- journal


def test_project_records_are_queryable_by_project(svc: Svc, project: Path) -> None:
    svc.sd.systemctl("start", "aiwg.socket", check=True)
    # A stranger's file where the socket link goes: a project-scoped warning.
    (project / ".aiwg" / "daemon").mkdir(parents=True)
    (project / ".aiwg" / "daemon" / "daemon.sock").write_text("not ours\n")
    svc.ctl("project", "add", str(project))

    def records() -> list[dict[str, Any]]:
        out = svc.sd.journalctl("-t", "aiwg", "-o", "json", f"PROJECT={project}").stdout
        return [json.loads(line) for line in out.splitlines()]

    recs = svc.sd.wait_for(lambda: len(r := records()) >= 2 and r, message=f"PROJECT={project} records")
    by_msg = {r["MESSAGE"]: r for r in recs}
    assert by_msg[f"project added: {project}"]["PRIORITY"] == "6"
    warning = next(r for m, r in by_msg.items() if "is not our link" in m)
    assert warning["PRIORITY"] == "4" and warning["LOGGER"] == "aiwg.service"
    assert all(r["PROJECT"] == str(project) for r in recs)


# --------------------------------------------------------------------------- aiwgctl install & friends


def test_aiwgctl_install_start_stop_uninstall(svc: Svc) -> None:
    sd = svc.sd
    for name in ("aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service"):
        (sd.unit_dir / name).unlink()  # keep only the drop-ins: `aiwgctl install` writes the units
    sd.daemon_reload()

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        res = sd.run([str(BIN / "aiwgctl"), *args], env=svc.env)
        assert res.returncode == 0 and "Traceback" not in res.stderr, f"aiwgctl {args}: {res.stdout}{res.stderr}"
        return res

    try:
        out = ctl("install").stdout
        assert f"wrote {sd.unit_dir / 'aiwg.service'}" in out
        text = (sd.unit_dir / "aiwg.service").read_text()
        assert f"ExecStart={BIN}/aiwg-service run --registered\n" in text
        assert "@BINDIR@" not in text
        assert sd.systemctl("is-enabled", "aiwg.socket").stdout.strip() == "enabled"
        assert svc.show("ActiveState", unit="aiwg.socket")["ActiveState"] == "active"
        assert svc.show("ActiveState")["ActiveState"] == "inactive"

        assert svc.ctl("ping").stdout.startswith("pong")  # activates it (ping answers first, READY=1 follows)
        sd.wait_for(lambda: svc.show("ActiveState")["ActiveState"] == "active", timeout=20, message="active")

        ctl("stop")
        assert svc.show("ActiveState")["ActiveState"] == "inactive"
        assert svc.show("ActiveState", unit="aiwg.socket")["ActiveState"] == "active"
        ctl("start")
        pid = svc.main_pid()
        assert pid > 0 and svc.show("ActiveState")["ActiveState"] == "active"
        ctl("restart")
        assert svc.main_pid() not in (0, pid)

        logs = ctl("logs", "-n", "20").stdout
        assert re.search(r"aiwg\[\d+\]: aiwg-service .* ready", logs), logs
        assert len(logs.splitlines()) <= 21  # 20 lines (+ a possible "-- Boot" header)
    finally:
        res = sd.run([str(BIN / "aiwgctl"), "uninstall"], env=svc.env)
    assert res.returncode == 0, res.stderr
    assert not (sd.unit_dir / "aiwg.service").exists()
    assert not (sd.unit_dir / "sockets.target.wants" / "aiwg.socket").exists()
    assert svc.show("ActiveState", unit="aiwg.socket")["ActiveState"] == "inactive"
    assert not svc.socket.exists()


def test_aiwgctl_start_without_user_manager(tmp_path: Path) -> None:
    """Outside any session (bogus runtime dir, no bus): one clear hint, exit 1, no traceback."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "XDG_RUNTIME_DIR": str(tmp_path / "no-such-runtime-dir"), "PYTHONPATH": str(REPO_ROOT)}
    res = subprocess.run([str(BIN / "aiwgctl"), "start"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no systemd user manager is reachable" in res.stderr
    assert "loginctl enable-linger" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- per-project instances


def test_per_project_instance(svc: Svc, project: Path) -> None:
    instance = systemd_escape_path(str(project))
    sock = f"aiwg@{instance}.socket"
    svc.sd.systemctl("enable", "--now", sock, check=True)
    try:
        assert svc.show("ActiveState", unit=f"aiwg@{instance}.service")["ActiveState"] == "inactive"
        res = svc.ctl("--instance", str(project), "ping")
        assert f"/aiwg/instances/{instance}.sock" in res.stdout
        svc.sd.wait_for(lambda: svc.show("ActiveState", unit=f"aiwg@{instance}.service")["ActiveState"] == "active",
                        timeout=20, message="active (READY=1 follows the first answer)")
        props = svc.show("ActiveState", "MainPID", unit=f"aiwg@{instance}.service")
        assert props["ActiveState"] == "active"
        # From inside the project dir, plain `aiwgctl status` finds the instance through the project link.
        st = svc.status(cwd=project / "src")
        assert st["pid"] == int(props["MainPID"])
        assert [p["path"] for p in st["projects"]] == [str(project)]
        assert st["socket_activated"] is True
        assert st["socket"] == str(svc.sd.runtime_dir / "aiwg" / "instances" / f"{instance}.sock")
        state_dir = Path(st["state_dir"])
        assert state_dir.name == instance and state_dir.parent.name == "instances"
        assert (state_dir / "state.json").exists()
        assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
        # The user service is a different thing and was never started.
        assert svc.show("ActiveState")["ActiveState"] == "inactive"
    finally:
        svc.sd.systemctl("disable", "--now", sock, f"aiwg@{instance}.service")
