"""Run the real ``aiwg-service`` as a subprocess with private XDG directories, and talk to it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
#: This checkout, first on the service's and aiwgctl's path: they run with cwd = the test's tmp dir, so an
#: inherited relative PYTHONPATH=. would not find it, and the venv's editable install may point elsewhere.
REPO = Path(__file__).resolve().parent.parent


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll ``pred`` until it returns something truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


class RpcConn:
    """A blocking NDJSON connection for tests: raw lines in, parsed replies out."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.rfile = self.sock.makefile("rb")
        self.next_id = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Any:
        line = self.rfile.readline()
        if not line:
            raise EOFError("connection closed")
        return json.loads(line)

    def request(self, method: str, params: Any = None, **extra: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self.next_id, **extra}
        if params is not None:
            msg["params"] = params
        self.send_raw(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.read()
            if isinstance(reply, dict) and reply.get("id") == self.next_id:
                return reply

    def call(self, method: str, params: Any = None) -> Any:
        reply = self.request(method, params)
        assert "error" not in reply, reply
        return reply["result"]

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class ServiceEnv:
    """Private XDG dirs, a project dir, and the env for both the service and aiwgctl."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runtime = tmp / "run"
        self.runtime.mkdir(mode=0o700)
        self.state_home = tmp / "state"
        self.config_home = tmp / "config"
        self.project = tmp / "project"
        self.project.mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_",
                                                                      "AIWG_", "JOURNAL_STREAM", "INVOCATION_ID"))},
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        self.socket = self.runtime / "aiwg" / "daemon.sock"
        self.state_dir = self.state_home / "aiwg"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "service.log"

    def start(self, *args: str, wait: bool = True, projects: list[Path] | None = None) -> subprocess.Popen[bytes]:
        cmd = [str(BIN / "aiwg-service"), "run", *args]
        for pr in projects if projects is not None else [self.project]:
            cmd += ["--project", str(pr)]
        logf = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=logf, stderr=logf)
        logf.close()
        if wait:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Every probe is retried until the deadline: one slow ping (a loaded machine, a stopped process)
        is a reason to ask again, never to give up (a read timeout is an OSError)."""
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                c = RpcConn(self.socket, 1.0)
            except OSError:
                return False
            try:
                # ping answers as soon as the config is loaded; ready means every subsystem has started
                return bool(c.call("ping")["pong"]) and not c.call("daemon.status").get("starting")
            except (OSError, EOFError, ValueError):  # a slow or cut answer: the probe is retried until the deadline
                return False
            finally:
                c.close()

        wait_for(ready, timeout, what="the service to answer ping")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        return rc

    def connect(self, timeout: float = 10.0) -> RpcConn:
        return RpcConn(self.socket, timeout)

    def call(self, method: str, params: Any = None) -> Any:
        c = self.connect()
        try:
            return c.call(method, params)
        finally:
            c.close()

    def ctl(self, *args: str, check: bool = False, cwd: Path | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(BIN / "aiwgctl"), *args], env=self.env, cwd=cwd or self.project,
                             capture_output=True, text=True, timeout=timeout)
        assert "Traceback" not in res.stderr, res.stderr
        if check:
            assert res.returncode == 0, f"aiwgctl {' '.join(args)} -> {res.returncode}\n{res.stdout}{res.stderr}"
        return res

    def write_project_config(self, data: dict[str, Any] | str, project: Path | None = None,
                             trusted: bool = True) -> Path:
        """Write a project's config; ``trusted`` also records it in the trust store, as ``aiwgctl trust``
        would (tests of other features need their rules to run; tests of trust pass False)."""
        path = (project or self.project) / ".aiwg" / "daemon.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
        if trusted:
            self.trust(project or self.project)
        return path

    def trust(self, project: Path | None = None) -> None:
        """Record the project's current config as trusted, straight in this service's trust store."""
        from aiwg_service.policy import trust

        root = str((project or self.project).resolve())
        try:
            d = trust.describe(root, trust.TrustStore(self.state_dir))
        except trust.Unreadable:
            return  # a test of invalid config: nothing there to trust
        if d["sha256"] is not None and d["needs"]:
            trust.TrustStore(self.state_dir).allow(root, d["sha256"], d["needs"])

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def kill_agents(state_dir: Path) -> None:
    """Agents outlive the service (by design): a test's teardown ends the ones it left behind."""
    for claim in (state_dir / "runs").glob("*.claim"):
        try:
            rec = json.loads(claim.read_text())
        except (OSError, ValueError):
            continue
        for pid, group in ((rec.get("child"), True), (rec.get("pid"), False)):
            if isinstance(pid, int) and pid > 1:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    (os.killpg if group else os.kill)(pid, signal.SIGKILL)


#: What asyncio logs for a task nobody owned: each one is a bug (see aiwg_service/owned.py).
ORPHAN_TASK_SIGNS = ("exception was never retrieved", "Task was destroyed but it is pending")


def end_service(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace``: a clean stop writes what it must (state, coverage data)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def orphan_task_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(s in line for s in ORPHAN_TASK_SIGNS)]


@pytest.fixture
def svc_env(tmp_path: Path) -> Iterator[ServiceEnv]:
    env = ServiceEnv(tmp_path)
    yield env
    if env.proc is not None:
        end_service(env.proc)
    kill_agents(env.state_dir)
    orphans = orphan_task_lines(env.log_text())
    assert not orphans, "a task nobody owned:\n" + "\n".join(orphans)


@pytest.fixture
def service(svc_env: ServiceEnv) -> ServiceEnv:
    """A running service on one project (the default config written on first start)."""
    svc_env.start()
    return svc_env


def which(name: str) -> str | None:
    return shutil.which(name)
