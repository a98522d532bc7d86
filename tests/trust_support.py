"""Two real local users, real git clones from bundles, and an impostor listening as the other user."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMES = ("aiwgtrust-alice", "aiwgtrust-mallory")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def as_user(self) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]


def ensure_user(name: str) -> User:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pw = None
    if pw is None:
        res = subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                              "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
        if res.returncode not in (0, 9):  # 9: made meanwhile by a parallel run
            raise AssertionError(f"useradd {name}: {res.stderr}")
        pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid)


@pytest.fixture(scope="session")
def users() -> tuple[User, User]:
    """alice (a victim who is not root) and mallory (the attacker)."""
    if os.geteuid() != 0:
        if os.environ.get("AIWG_NO_SKIP"):
            pytest.fail("the two-user trust tests need root (useradd, setpriv)")
        pytest.skip("needs root to create users and run processes as them")
    return ensure_user(NAMES[0]), ensure_user(NAMES[1])


#: Listens on argv[1], chmod 0777, writes "ready" then one line per connection with the bytes received.
LISTENER = r"""
import os, socket, sys
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(16)
with open(log, "a") as f:
    f.write("ready\n")
while True:
    c, _ = s.accept()
    c.settimeout(3)
    got = b""
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    with open(log, "a") as f:
        f.write(f"conn {len(got)} {got[:200]!r}\n")
    c.close()
"""


class Impostor:
    """A socket served by another user; ``received()`` is what any client ever sent it."""

    def __init__(self, user: User, path: Path, where: Path) -> None:
        self.path = path
        self.log = where / f"impostor-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log.touch()
        os.chmod(self.log, 0o666)
        self.proc = subprocess.Popen([*user.as_user(), sys.executable, "-c", LISTENER, str(path), str(self.log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while "ready" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"impostor did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.02)

    def received(self) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if ln.startswith("conn")]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-writable, sticky directory outside pytest's private tree (like /tmp itself)."""
    d = Path(tempfile.mkdtemp(prefix="aiwg-trust-", dir="/tmp"))
    os.chmod(d, 0o1777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x.invalid", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x.invalid", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    res = subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "safe.directory=*", *args], cwd=cwd,
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"git {' '.join(args)}: {res.stderr}"
    return res.stdout


class Origin:
    """The attacker's repository; victims clone it from a bundle file, as from any remote."""

    def __init__(self, where: Path) -> None:
        self.dir = where / "origin"
        self.dir.mkdir()
        self.bundle = where / "repo.bundle"
        git("init", "-q", cwd=self.dir)

    def commit(self, files: dict[str, str], links: dict[str, str] | None = None, msg: str = "c") -> None:
        for rel, text in files.items():
            p = self.dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for rel, target in (links or {}).items():
            p = self.dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink():
                p.unlink()
            p.symlink_to(target)
        git("add", "-A", cwd=self.dir)
        git("commit", "-q", "-m", msg, cwd=self.dir)
        git("bundle", "create", "-q", str(self.bundle), "main", cwd=self.dir)

    def clone(self, dest: Path) -> Path:
        git("clone", "-q", "-b", "main", str(self.bundle), str(dest), cwd=dest.parent)
        return dest

    def pull_into(self, clone: Path) -> None:
        git("pull", "-q", "--ff-only", str(self.bundle), "main", cwd=clone)
