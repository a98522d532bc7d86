"""aiwg_service.systemd without a service manager: wire format, env handling, laziness.

The same functions are exercised under a real manager in test_systemd_units.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import systemd_env

from aiwg_service import systemd as sd

REPO = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for the manager's notify socket."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield s


def test_notify_without_socket_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd.notify("READY=1") is False
    assert sd.notify_ready() is False
    assert sd.notify_watchdog() is False


def test_notify_to_unreachable_socket_is_not_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd.notify_ready() is False


def test_notify_messages(notify_socket: socket.socket) -> None:
    def sent(ok: bool) -> str:
        assert ok is True
        return notify_socket.recv(4096).decode()

    assert sent(sd.notify_ready()) == "READY=1"
    assert sent(sd.notify_ready("serving 3 projects")) == "READY=1\nSTATUS=serving 3 projects"
    assert sent(sd.notify_status("two\nlines")) == "STATUS=two lines"
    assert sent(sd.notify_watchdog()) == "WATCHDOG=1"
    assert sent(sd.notify_stopping()) == "STOPPING=1"
    assert sent(sd.notify_extend_timeout(5_000_000)) == "EXTEND_TIMEOUT_USEC=5000000"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = sent(sd.notify_reloading())
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = msg.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert os.environ.get("NOTIFY_SOCKET")  # kept for later notifications


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("4000000", None, 2.0),
        ("4000000", "self", 2.0),
        ("4000000", "1", None),  # inherited from our parent: not ours
        ("4000000", "junk", None),
        ("0", None, None),
        ("junk", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for var, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(os.getpid()) if value == "self" else value)
    assert sd.watchdog_interval() == expected


LISTEN_SCRIPT = """
import json, os, socket, sys
from aiwg_service import systemd as sd
a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); a.bind(sys.argv[1] + "/a"); a.listen()
b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); b.bind(sys.argv[1] + "/b"); b.listen()
os.dup2(a.fileno(), 3); os.dup2(b.fileno(), 4)
if sys.argv[2] == "activated":
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES="rpc:metrics")
elif sys.argv[2] == "other-pid":
    os.environ.update(LISTEN_PID="1", LISTEN_FDS="2", LISTEN_FDNAMES="rpc:metrics")
fds = sd.listen_fds()
print(json.dumps({
    "fds": fds,
    "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "inheritable": [os.get_inheritable(fd) for fd, _ in fds],
}))
"""


@pytest.mark.parametrize(
    ("mode", "fds"),
    [("activated", [[3, "rpc"], [4, "metrics"]]), ("other-pid", []), ("none", [])],
)
def test_listen_fds(tmp_path: Path, mode: str, fds: list) -> None:
    """Run in a child: fds 3/4 and LISTEN_* must be owned by the process under test."""
    out = subprocess.run(
        [sys.executable, "-c", LISTEN_SCRIPT, str(tmp_path), mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPO},
    ).stdout
    result = json.loads(out)
    assert result["fds"] == fds
    assert result["env"] == []  # unset so agents we spawn don't inherit them
    assert result["inheritable"] == [False] * len(fds)


def test_under_journal_stream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert sd.under_journal() is False
    err = tmp_path / "stderr"
    with err.open("w") as f:
        monkeypatch.setattr(sys, "stderr", f)
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert sd.under_journal() is True
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # stderr was redirected
        assert sd.under_journal() is False
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert sd.under_journal() is False


def test_under_journal_invocation_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    fake = tmp_path / "journal.socket"
    monkeypatch.setattr(sd, "JOURNAL_SOCKET", str(fake))
    assert sd.under_journal() is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(fake))
        assert sd.under_journal() is True


def test_import_is_lazy() -> None:
    """aiwgctl imports this module; systemd-python must not load until used."""
    code = "import sys, aiwg_service.systemd; print('systemd' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert out.stdout.strip() == "False"


def test_journal_handler_filters_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """What reaches journal.send: upper-case extras only, no LogRecord internals, no clashes."""
    import logging

    import systemd.journal

    sent: list[dict] = []
    monkeypatch.setattr(systemd.journal, "send", lambda msg, **kw: sent.append({"MESSAGE": msg, **kw}))
    handler = sd.make_journal_handler("aiwg-unit")
    record = logging.LogRecord("aiwg.x", logging.INFO, __file__, 1, "hi %s", ("there",), None)
    record.PROJECT = "/p"
    record.project = "dropped"
    record.PRIORITY = "0"  # would clash with the handler's own PRIORITY= and lose the record
    handler.emit(record)
    (fields,) = sent
    assert fields["MESSAGE"] == "hi there"
    assert fields["PROJECT"] == "/p" and fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "aiwg-unit" and fields["CODE_ARGS"] == "('there',)"
    assert fields["LOGGER"] == "aiwg.x" and fields["CODE_LINE"] == 1
    assert not {k for k in fields if not k.isupper()}


def test_skip_or_fail_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(systemd_env.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        systemd_env.skip_or_fail("no root")
    monkeypatch.setenv(systemd_env.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception):
        systemd_env.skip_or_fail("no root")
