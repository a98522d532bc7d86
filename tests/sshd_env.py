"""A real OpenSSH server on a free loopback port, with generated keys, for tests.

``SshServer`` writes a host key, a user key (authorized for the current user), a ``known_hosts``
holding the host key, and an ``ssh_config`` naming the server ``Host <alias>`` with that port, key and
known_hosts (``StrictHostKeyChecking yes``), then runs ``sshd -D -e`` bound to 127.0.0.1 only.
:meth:`stop` and :meth:`start` take it away and bring it back on the same port and key ("the host goes
away"); :meth:`kill_sessions` also drops the connections sshd is serving.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def missing_requirements() -> list[str]:
    reasons = []
    if not os.access(SSHD, os.X_OK):
        reasons.append(f"{SSHD} not found (openssh-server)")
    if shutil.which("ssh-keygen") is None:
        reasons.append("ssh-keygen not found (openssh-client)")
    if os.geteuid() != 0:
        reasons.append("not running as root (sshd needs it to switch to the session user)")
    return reasons


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


class SshServer:
    """``with SshServer(alias="testhost") as s:`` -> ``s.ssh_config``, ``s.known_hosts``, ``s.port``."""

    def __init__(self, alias: str = "testhost", root: Path | None = None, *, prefix: list[str] | None = None,
                 extra_config: str = "") -> None:
        """``prefix`` runs sshd through another command (e.g. ``nsenter`` into a private user manager's
        namespaces); ``extra_config`` is appended to sshd_config (e.g. ``SetEnv``)."""
        self.alias = alias
        self.prefix = prefix or []
        self.extra_config = extra_config
        self.root = Path(tempfile.mkdtemp(prefix="aiwg-sshd-")) if root is None else root
        self._own_root = root is None
        self.port = free_port()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = self.root / "host_ed25519"
        self.user_key = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self.sshd_config = self.root / "sshd_config"
        self.log_path = self.root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SshServer:
        self.write_files()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def write_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "aiwg-test-host")
        keygen(self.user_key, "aiwg-test-user")
        (self.root / "authorized_keys").write_text((self.root / "id_ed25519.pub").read_text())
        host_pub = (self.root / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.sshd_config.write_text(f"""\
ListenAddress 127.0.0.1:{self.port}
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {self.root / 'authorized_keys'}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
{self.extra_config}
""")
        self.ssh_config.write_text(f"""\
Host {self.alias}
  HostName 127.0.0.1
  Port {self.port}
  User {self.user}
  IdentityFile {self.user_key}
  IdentitiesOnly yes
  UserKnownHostsFile {self.known_hosts}
  StrictHostKeyChecking yes
""")
        for p in (self.root, self.host_key, self.user_key):
            p.chmod(0o700 if p.is_dir() else 0o600)

    def start(self, timeout: float = 15.0) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen([*self.prefix, SSHD, "-D", "-e", "-f", str(self.sshd_config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.settimeout(1)
                s.connect(("127.0.0.1", self.port))
                if s.recv(4).startswith(b"SSH-"):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not answer on port {self.port}")
            time.sleep(0.05)

    def kill_sessions(self) -> None:
        """Drop every connection this sshd serves (its per-connection children), as a host that vanished."""
        if self.proc is None:
            return
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        for pid in out.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def stop(self, drop_sessions: bool = True) -> None:
        if self.proc is None:
            return
        if drop_sessions:
            self.kill_sessions()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the server with the OpenSSH client (for test assertions)."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.alias, command],
                              capture_output=True, text=True, check=check, timeout=30)
