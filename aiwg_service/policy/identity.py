"""Who is calling: the owner at a terminal, or a process inside an agent task or a rule's shell.

Every caller of the socket runs as the owner (the peer uid is checked first), so the uid says nothing more.
What does is where the peer process sits, from the kernel's facts about its pid (``SO_PEERCRED``):

1. its cgroup (``/proc/PID/cgroup``): under systemd an agent runs in ``aiwg-task-<id>.service``, and a rule's
   shell is a child inside the service's own unit;
2. its ancestry (``/proc/PID/stat``): a process descended from the service is one of the service's children
   (rule shells, worktree setup), never the owner at a terminal;
3. a per-run token (``AIWG_CALLER_TOKEN``) the service puts in the environment of every agent and rule shell
   it starts, looked for in the peer's and each ancestor's initial environment (``/proc/PID/environ``), so a
   child that clears its environment is still found through its parent. The token is signed with a key kept
   in the state directory (0600) and names the kind, project and run: it is what scopes the caller to its
   project. A process that has the variable at all is confined, valid signature or not.

Any one of these makes the caller confined; none is needed for the owner. A process that escapes all three
(a daemonised grandchild that cleared its environment, in the foreground without systemd) is a known limit;
under systemd the cgroup holds, and ``sandbox`` confines the agent further.

``peer_identity(pid)`` is the one function others use (``rpc`` caches it per connection; the sandbox asks it
to let a confined agent reach the socket read-only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

TOKEN_VAR = "AIWG_CALLER_TOKEN"
KEY_FILE = "caller.key"
_TASK_UNIT = re.compile(r"/aiwg-task-([A-Za-z0-9_.-]+)\.service(?:/|$)")
_SERVICE_UNIT = re.compile(r"/aiwg(?:@[^/]*)?\.service$")
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Caller:
    """``kind``: ``owner``, ``agent`` (a task's process), ``rule`` (a rule's shell) or ``child`` (another
    child of the service, or a process that carries a token it cannot prove)."""

    kind: str
    project: str | None = None
    ref: str | None = None  # task id or rule run id
    pid: int | None = None
    how: str = ""  # what gave it away: cgroup, ancestry, token

    @property
    def confined(self) -> bool:
        return self.kind != "owner"

    def describe(self) -> str:
        if not self.confined:
            return f"the owner (pid {self.pid})"
        what = {"agent": "an agent task", "rule": "a rule shell"}.get(self.kind, "a child of the service")
        ref = f" {self.ref}" if self.ref else ""
        proj = f" in {self.project}" if self.project else ""
        return f"{what}{ref}{proj} (pid {self.pid}, by {self.how})"


OWNER = Caller("owner")

_key: bytes | None = None


def load_key(state_dir: str | os.PathLike[str]) -> bytes:
    """The signing key for tokens (created once, 0600): tokens stay valid for agents that outlive a restart."""
    global _key
    path = Path(state_dir) / KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            key = f.read(64)
        if len(key) < 32:
            raise ValueError("short key")
    except (FileNotFoundError, ValueError):
        key = os.urandom(32)
        tmp = path.with_name(f".{KEY_FILE}.{os.urandom(6).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        os.replace(tmp, path)
    _key = key
    return key


def _sign(body: bytes) -> str:
    return hmac.new(_key or b"unkeyed", body, hashlib.sha256).hexdigest()[:32]


def mint(kind: str, project: str | None, ref: str | None) -> str:
    """A token naming who a child is; verified by ``verify``."""
    body = base64.urlsafe_b64encode(json.dumps([kind, project, ref]).encode()).decode().rstrip("=")
    return f"{body}.{_sign(body.encode())}"


def child_env(kind: str, project: str | None, ref: str | None) -> dict[str, str]:
    """What the service adds to the environment of an agent (``kind="agent"``) or a rule shell (``"rule"``)."""
    return {TOKEN_VAR: mint(kind, project, ref)}


def verify(token: str) -> Caller | None:
    body, _, sig = token.partition(".")
    if _key is None or not hmac.compare_digest(sig, _sign(body.encode())):
        return None
    try:
        kind, project, ref = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None
    return Caller(str(kind), project if isinstance(project, str) else None, ref if isinstance(ref, str) else None)


def _read(path: str, limit: int = 1 << 20) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def cgroup_of(pid: int) -> str | None:
    data = _read(f"/proc/{pid}/cgroup", 8192)
    if not data:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _ppid(pid: int) -> int | None:
    data = _read(f"/proc/{pid}/stat", 4096)
    if not data:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[1]) if len(fields) > 1 else None


def _token(pid: int) -> str | None:
    data = _read(f"/proc/{pid}/environ")
    if not data or TOKEN_VAR.encode() not in data:
        return None
    prefix = TOKEN_VAR.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


_own_cgroup: dict[int, str] = {}  # the service's cgroup, looked up once (it does not move)


def peer_identity(pid: int | None, service_pid: int | None = None) -> Caller:
    """Who the process ``pid`` (a socket peer of the owner's uid) is; see the module docstring."""
    if pid is None or pid <= 0:
        return Caller("child", pid=pid, how="no peer pid")  # cannot tell: not the owner's terminal
    me = os.getpid() if service_pid is None else service_pid
    own = _own_cgroup.get(me)
    if own is None:
        own = _own_cgroup[me] = cgroup_of(me) or ""
    cg = cgroup_of(pid) or ""
    m = _TASK_UNIT.search(cg)
    found: Caller | None = Caller("agent", ref=m.group(1), pid=pid, how="cgroup") if m else None
    if found is None and _SERVICE_UNIT.search(own) and cg == own and pid != me:
        found = Caller("rule", pid=pid, how="cgroup")
    cur: int | None = pid
    for _ in range(_MAX_DEPTH):
        if cur is None or cur <= 1:
            break
        if cur == me and cur != pid:
            found = found or Caller("rule", pid=pid, how="ancestry")
        tok = _token(cur)
        if tok is not None:
            named = verify(tok)
            if named is not None:
                return Caller(named.kind, named.project, named.ref, pid, "token")
            return found or Caller("child", pid=pid, how="token (unverified)")
        if cur == me:
            break
        cur = _ppid(cur)
    return found or Caller("owner", pid=pid, how="")
