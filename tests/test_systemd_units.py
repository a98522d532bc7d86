"""The shipped unit files under a real systemd user manager (see tests/systemd_env.py).

The units run ``tests/fake_daemon.py`` as ``aiwg-service`` so that what is
tested is the unit files plus aiwg_service.systemd, not the real daemon.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd_env
from systemd_env import REPO_ROOT, UNITS_DIR, UserManager

from aiwg_service.systemd import systemd_escape_path

UNIT_FILES = ["aiwg.socket", "aiwg.service", "aiwg@.socket", "aiwg@.service"]

# Short timers so watchdog/restart tests take seconds; everything else comes from the real units.
TEST_DROPIN = """[Service]
WatchdogSec=2s
TimeoutAbortSec=2s
RestartSec=200ms
"""


@pytest.fixture(scope="session")
def fake_bindir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with an executable ``aiwg-service`` that runs the fake daemon."""
    bindir = tmp_path_factory.mktemp("bin")
    exe = bindir / "aiwg-service"
    exe.write_text(
        "#!/bin/sh\n"
        f"export PYTHONPATH='{REPO_ROOT}'\n"
        f"exec '{sys.executable}' '{REPO_ROOT / 'tests' / 'fake_daemon.py'}' \"$@\"\n"
    )
    exe.chmod(0o755)
    return bindir


@pytest.fixture
def units(sd: UserManager, fake_bindir: Path) -> UserManager:
    sd.install_unit_text("aiwg.service.d/test.conf", TEST_DROPIN)
    sd.install_unit_text("aiwg@.service.d/test.conf", TEST_DROPIN)
    sd.install_units(fake_bindir)
    return sd


def read_info(sd: UserManager, state_subdir: str = "aiwg") -> dict:
    path = sd.config_home / state_subdir / "info.json"  # StateDirectory= base on systemd 252
    if not path.exists():
        path = sd.state_home / state_subdir / "info.json"
    return json.loads(sd.wait_for(lambda: path.exists() and path.read_text(), message=f"{path}"))


def ask(sock_path: Path, line: str = "ping") -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock_path))
        s.sendall(line.encode() + b"\n")
        return s.makefile().readline().strip()


# --------------------------------------------------------------------------- static checks


def test_units_have_bindir_placeholder() -> None:
    for name in ("aiwg.service", "aiwg@.service"):
        text = (UNITS_DIR / name).read_text()
        assert "ExecStart=@BINDIR@/aiwg-service run" in text
    assert "--project /%I\n" in (UNITS_DIR / "aiwg@.service").read_text()
    # The user service serves the registered projects, not its cwd ($HOME); an instance serves its own.
    assert "ExecStart=@BINDIR@/aiwg-service run --registered\n" in (UNITS_DIR / "aiwg.service").read_text()
    assert "--registered" not in (UNITS_DIR / "aiwg@.service").read_text()


def test_units_are_hardened_but_spare_agents_and_abort_quickly() -> None:
    """The daemon's files are private (UMask=0077); nothing that would break agents' runtimes or hide project
    trees (MemoryDenyWriteExecute=, ProtectHome=, PrivateTmp=); TimeoutAbortSec= bounds a hang."""
    for name in ("aiwg.service", "aiwg@.service"):
        lines = [line for line in (UNITS_DIR / name).read_text().splitlines() if "=" in line and line[0] != "#"]
        keys = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines}
        assert keys["UMask"] == "0077", name
        assert keys["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6 AF_NETLINK", name
        assert not {"MemoryDenyWriteExecute", "ProtectHome", "PrivateTmp", "PrivateNetwork"} & set(keys), name
        assert "TimeoutAbortSec" in keys, name
    sandbox = [ln for ln in (UNITS_DIR / "aiwg.service").read_text().splitlines() if ln.split("=")[0] in SANDBOX_KEYS]
    assert sandbox == [ln for ln in (UNITS_DIR / "aiwg@.service").read_text().splitlines()
                       if ln.split("=")[0] in SANDBOX_KEYS], "both services have the same sandbox"


def test_units_verify(units: UserManager) -> None:
    """systemd-analyze verify passes on all four units (templates via a concrete instance)."""
    paths = [units.unit_dir / n for n in ("aiwg.socket", "aiwg.service")]
    for template in ("aiwg@.socket", "aiwg@.service"):
        instance = units.base / "verify" / template.replace("@.", f"@{systemd_escape_path('/srv/my-proj')}.")
        instance.parent.mkdir(exist_ok=True)
        instance.write_text((units.unit_dir / template).read_text())
        paths.append(instance)
    result = units.verify(*paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "//",
        "/tmp/",
        "/home/user/my project",
        "/a-b/c.d",
        "/.hidden/x",
        "/a/.b",
        "/a//b/./c/",
        "/ü/日本",
        "/a\\b",
        "/x:y_z@+~%",
        "/-",
        "/trailing-dash-",
        "/tab\tnewline\n",
    ],
)
def test_escape_path_matches_systemd_escape(path: str) -> None:
    real = subprocess.run(
        ["systemd-escape", "--path", "--", path], capture_output=True, text=True, check=True
    )
    assert systemd_escape_path(path) == real.stdout.rstrip("\n")


def test_escape_path_rejects_dotdot() -> None:
    assert subprocess.run(["systemd-escape", "--path", "--", "/a/../b"], capture_output=True).returncode != 0
    with pytest.raises(ValueError):
        systemd_escape_path("/a/../b")


# --------------------------------------------------------------------------- behaviour under systemd


def test_notify_lifecycle(units: UserManager) -> None:
    """activating until READY=1, STATUS= visible, reload waits for READY=1, clean stop."""
    units.install_unit_text(
        "aiwg.service.d/delay.conf", "[Service]\nEnvironment=FAKE_START_DELAY=2 FAKE_RELOAD_DELAY=2\n"
    )
    units.daemon_reload()
    units.systemctl("start", "--no-block", "aiwg.service", check=True)
    props = units.wait_for_state("aiwg.service", "activating", "start")
    units.wait_for(lambda: units.show("aiwg.service", "StatusText")["StatusText"] == "starting")
    assert units.show("aiwg.service", "ActiveState")["ActiveState"] == "activating"
    props = units.wait_for_state("aiwg.service", "active", "running")
    assert props["StatusText"] == "serving"

    units.systemctl("reload", "--no-block", "aiwg.service", check=True)
    units.wait_for_state("aiwg.service", "reloading", "reload")
    units.systemctl("reload", "aiwg.service", check=True)  # queued after the first; blocks until READY=1
    props = units.wait_for_state("aiwg.service", "active", "running")
    assert props["StatusText"] == "reloaded 2"

    units.systemctl("stop", "aiwg.service", check=True)
    props = units.show("aiwg.service", "ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}
    log = units.journalctl("-t", "aiwg", "-o", "cat", "LOGGER=aiwg.fake").stdout
    assert "fake daemon stopping" in log


def test_watchdog_kills_and_restarts_hung_daemon(units: UserManager) -> None:
    units.systemctl("start", "aiwg.service", check=True)
    props = units.wait_for_state("aiwg.service", "active", "running")
    info = read_info(units)
    assert info["watchdog_interval"] == pytest.approx(1.0)
    old_pid = int(props["MainPID"])
    os.kill(old_pid, signal.SIGSTOP)  # wedge it: no more WATCHDOG=1
    props = units.wait_for(
        lambda: (
            (p := units.show("aiwg.service", "MainPID", "NRestarts", "ActiveState"))["NRestarts"] == "1"
            and p["ActiveState"] == "active"
            and p
        ),
        timeout=30,
        message="watchdog restart",
    )
    assert int(props["MainPID"]) != old_pid
    assert not Path(f"/proc/{old_pid}").exists() or "zombie" in Path(f"/proc/{old_pid}/status").read_text()
    log = units.journalctl("-o", "cat", "-t", "systemd").stdout
    assert "aiwg.service: Watchdog timeout" in log


def test_socket_activation_and_sandbox(units: UserManager) -> None:
    units.systemctl("start", "aiwg.socket", check=True)
    assert units.show("aiwg.service", "ActiveState")["ActiveState"] == "inactive"
    sock = units.runtime_dir / "aiwg" / "daemon.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    assert ask(sock) == "pong None 0"  # the first connect starts the service
    units.wait_for_state("aiwg.service", "active", "running")

    info = read_info(units)
    assert info["fds"] == [[3, "rpc"]]
    assert info["listen_env_left"] == []  # unset so agents don't inherit
    assert info["under_journal"] is True  # stdout/stderr -> journal via JOURNAL_STREAM
    # Sandboxing from the unit is in effect: no capabilities, seccomp, the daemon's own files private.
    assert info["NoNewPrivs"] == "1"
    assert info["Seccomp"] == "2"
    assert info["CapBnd"] == "0000000000000000"
    assert info["umask"] == "0o77"


def test_template_instance_per_project(units: UserManager) -> None:
    # Kept short on purpose: %t/aiwg/instances/<escaped>.sock must fit in sun_path
    # (108 bytes) and every '-' in the project path costs 4 bytes escaped.
    project = Path(tempfile.mkdtemp(prefix="aiwg p-1.", dir="/tmp"))
    instance = systemd_escape_path(str(project))
    units.systemctl("start", f"aiwg@{instance}.socket", check=True)
    sock = units.runtime_dir / "aiwg" / "instances" / f"{instance}.sock"
    assert ask(sock) == f"pong {project} 0"  # %I unescapes back to the real path (space and all)
    units.wait_for_state(f"aiwg@{instance}.service", "active", "running")
    info = read_info(units, f"aiwg/instances/{instance}")
    assert info["project"] == str(project)
    assert info["state_directory"].endswith(f"/aiwg/instances/{instance}")
    units.systemctl("stop", f"aiwg@{instance}.socket", f"aiwg@{instance}.service", check=True)
    assert not sock.exists()
    project.rmdir()


def test_overlong_instance_socket_path_fails_cleanly(units: UserManager) -> None:
    """A deep project path makes the instance socket path exceed sun_path: the socket unit fails."""
    instance = systemd_escape_path("/home/someone/src/" + "-".join(["deep"] * 12))
    assert len(str(units.runtime_dir / "aiwg" / "instances" / f"{instance}.sock")) > 108
    res = units.systemctl("start", f"aiwg@{instance}.socket")
    assert res.returncode != 0


def test_journal_structured_fields(sd: UserManager) -> None:
    """make_journal_handler: extra={"PROJECT": ...} becomes a journal field; lower-case keys don't."""
    ident = f"aiwg-test-{os.getpid()}"
    code = (
        "import logging\n"
        "from aiwg_service.systemd import make_journal_handler\n"
        "log = logging.getLogger('aiwg.jtest'); log.setLevel(logging.DEBUG)\n"
        f"log.addHandler(make_journal_handler({ident!r}))\n"
        "extra = {'PROJECT': '/p', 'TASK_ID': 't1', 'project': 'lower', 'N': 3}\n"
        "log.info('hello %s', 'world', extra=extra)\n"
        "log.warning('careful', extra={'PROJECT': '/p', 'PRIORITY': '0'})\n"
        "try:\n    1/0\nexcept ZeroDivisionError:\n    log.exception('boom', extra={'PROJECT': '/q'})\n"
    )
    res = sd.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO_ROOT)})
    assert res.returncode == 0 and res.stderr == "", res.stderr

    def records() -> list[dict]:
        out = sd.journalctl("-t", ident, "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines()]

    recs = sd.wait_for(lambda: len(r := records()) >= 3 and r, message="journal records")
    hello, careful, boom = recs
    assert hello["MESSAGE"] == "hello world"
    assert (hello["PROJECT"], hello["TASK_ID"], hello["N"]) == ("/p", "t1", "3")
    assert hello["PRIORITY"] == "6" and hello["LOGGER"] == "aiwg.jtest"
    assert hello["SYSLOG_IDENTIFIER"] == ident
    assert "project" not in hello and "MSG" not in hello and "LEVELNAME" not in hello
    assert careful["PRIORITY"] == "4"  # an extra can't override the level
    assert boom["PRIORITY"] == "3" and "ZeroDivisionError" in boom["EXCEPTION_TEXT"]

    # The documented query form works.
    out = sd.journalctl("-t", ident, "PROJECT=/q", "-o", "cat").stdout
    assert out.startswith("boom\nTraceback")  # MESSAGE carries the formatted traceback too


SANDBOX_KEYS = (
    "PrivateUsers",
    "CapabilityBoundingSet",
    "NoNewPrivileges",
    "ProtectClock",
    "ProtectHostname",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RestrictNamespaces",
    "RestrictAddressFamilies",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "KeyringMode",
    "UMask",
)


# what a user does where unprivileged user namespaces are disabled (the unit's comment says so)
NO_USERNS_DROPIN = "PrivateUsers=no\nCapabilityBoundingSet=~\nProtectClock=no\nProtectHostname=no\n"
PROBE = ("/bin/sh -c 'grep -E \"^(NoNewPrivs|Seccomp|CapBnd):\" /proc/self/status; umask; "
         "cat /proc/self/uid_map; id -u'")


@pytest.fixture(scope="module")
def nobody() -> Iterator[UserManager]:
    """An unprivileged user manager (uid 65534), as real users have."""
    systemd_env.require_private_manager_support()
    with UserManager(uid=65534) as mgr:
        yield mgr


def install_as_user(mgr: UserManager, name: str, text: str) -> None:
    mgr.install_unit_text(name, text)
    os.chown(mgr.unit_dir / name, 65534, 65534)


def probe(mgr: UserManager, sandbox: list[str]) -> str:
    """Run a oneshot with the sandbox lines; return what it saw of itself."""
    out = mgr.runtime_dir / "probe.out"
    out.unlink(missing_ok=True)
    install_as_user(mgr, "probe.service", "[Service]\nType=oneshot\n"
                    f"ExecStart={PROBE}\nStandardOutput=file:{out}\n" + "\n".join(sandbox) + "\n")
    mgr.daemon_reload()
    res = mgr.systemctl("start", "probe.service")
    assert res.returncode == 0, res.stderr + mgr.journalctl("-o", "cat", "-n", "20").stdout
    mgr.systemctl("reset-failed")
    return out.read_text()


def sandbox_lines() -> list[str]:
    lines = [line for line in (UNITS_DIR / "aiwg.service").read_text().splitlines()
             if line.split("=", 1)[0] in SANDBOX_KEYS]
    assert [ln.split("=", 1)[0] for ln in lines] == list(SANDBOX_KEYS)
    return lines


@pytest.mark.systemd
def test_sandbox_works_in_unprivileged_user_manager(nobody: UserManager) -> None:
    """Real users run an unprivileged manager: the unit's sandbox starts there and is in effect."""
    text = probe(nobody, sandbox_lines())
    assert "NoNewPrivs:\t1" in text and "Seccomp:\t2" in text, text
    assert "CapBnd:\t0000000000000000" in text, text
    assert "\n0077\n" in text, text
    uid_map = [line.split() for line in text.splitlines() if len(line.split()) == 3]
    assert ["65534", "65534", "1"] in uid_map, text  # a user namespace that maps only the user (and root)
    assert text.rstrip().endswith("65534")


@pytest.mark.systemd
def test_sandbox_fallback_without_user_namespaces(nobody: UserManager) -> None:
    """The drop-in the unit's comment gives for systems without unprivileged user namespaces starts."""
    text = probe(nobody, [*sandbox_lines(), *NO_USERNS_DROPIN.splitlines()])
    assert "NoNewPrivs:\t1" in text and "Seccomp:\t2" in text, text
    assert "CapBnd:\t0000000000000000" not in text, text


@pytest.mark.systemd
def test_security_exposure_at_most_4_5(nobody: UserManager) -> None:
    """`systemd-analyze security --user` rates both shipped services "OK" (<= 4.5) under a real user manager."""
    for name in UNIT_FILES:
        install_as_user(nobody, name, (UNITS_DIR / name).read_text().replace("@BINDIR@", "/usr/bin"))
    nobody.daemon_reload()
    instance = f"aiwg@{systemd_escape_path('/srv/proj')}.service"
    for unit in ("aiwg.service", instance):
        res = nobody.run(["systemd-analyze", "security", "--user", "--no-pager", unit], as_user=True)
        assert res.returncode == 0, res.stderr
        m = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+) (\w+)", res.stdout)
        assert m, res.stdout[-2000:]
        assert float(m.group(1)) <= 4.5 and m.group(2) == "OK", res.stdout
