"""One task's sandbox, resolved: absolute paths, what is hidden, writable, reachable.

Both renderers (``units.unit_properties`` for a systemd unit, ``bwrap.bwrap_argv`` for bubblewrap) read
only this object, so the two mechanisms cannot drift apart; it is stored with the task (``aiwgctl task
get``) so what an agent ran with is on the record.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from msgspec import Struct

from .schema import SandboxSection

__all__ = ["AGENT_STATE", "DEFAULT_HIDE", "PROXY_ADDR", "Policy", "git_common_dir", "resolve", "split_hidden",
           "under"]

#: Under the owner's home: never visible to an agent (the owner extends it with ``hide``).
DEFAULT_HIDE: tuple[str, ...] = (
    ".ssh", ".gnupg", ".aws", ".azure", ".config/gcloud", ".kube", ".docker", ".netrc", ".git-credentials",
    ".config/gh", ".config/hub", ".password-store", ".local/share/keyrings", ".local/share/kwalletd",
    ".pki", ".mozilla", ".config/google-chrome", ".config/chromium", ".config/BraveSoftware",
    ".config/microsoft-edge", ".var/app", ".vault-token", ".npmrc", ".pypirc", ".cargo/credentials.toml",
    ".config/aiwg",
)
#: Under the owner's home: the agent's own state, writable.
AGENT_STATE: tuple[str, ...] = (".claude", ".claude.json", ".cache/claude-cli-nodejs")
#: Where the filtering proxy appears inside an agent's network namespace (``network: allow``).
PROXY_ADDR = "127.0.0.1:3128"


class Policy(Struct, kw_only=True):
    """What one agent may read, write and reach.  ``enabled=False``: nothing is confined."""

    enabled: bool = True
    profile: str = ""
    cwd: str = ""
    #: writable (bound read-write): the working directory first, then the agent's state
    write: list[str] = []
    #: inside a writable path but kept read-only (the project's ``.aiwg``: its config is trusted by hash)
    read_only: list[str] = []
    #: invisible (the deny-list, the service's state and runtime, other projects)
    hide: list[str] = []
    network: str = "full"
    allow_hosts: list[str] = []
    #: the service's socket, visible (read-only access) when the profile grants it
    socket: str | None = None
    memory_deny_write_execute: bool = True
    #: set at launch with ``network: allow``: the task's proxy socket (bound into the sandbox)
    proxy_socket: str | None = None

    def summary(self) -> dict[str, object]:
        """The short form stored with the task and shown by ``aiwgctl task get``."""
        if not self.enabled:
            return {"enabled": False}
        out: dict[str, object] = {"enabled": True, "write": self.write, "network": self.network}
        if self.network == "allow":
            out["allow_hosts"] = self.allow_hosts
        out["socket"] = "read" if self.socket else "none"
        out["hidden"] = len(self.hide)
        return out


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (plain string test on normalised absolute paths)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def git_common_dir(cwd: str) -> str | None:
    """A linked worktree (``.git`` is a file) commits into its main repository's ``.git``: that directory."""
    dotgit = os.path.join(cwd, ".git")
    if not os.path.isfile(dotgit):
        return None
    try:
        with open(dotgit) as f:
            line = f.read(4096).strip()
        if not line.startswith("gitdir:"):
            return None
        gitdir = os.path.normpath(os.path.join(cwd, line[7:].strip()))
        common = os.path.join(gitdir, "commondir")
        if os.path.isfile(common):
            with open(common) as f:
                return os.path.normpath(os.path.join(gitdir, f.read(4096).strip()))
        return gitdir
    except OSError:
        return None


def _expand(p: str, home: str) -> str:
    if p == "~" or p.startswith("~/"):
        p = home + p[1:]
    return os.path.normpath(p)


def _uniq(paths: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for p in paths:
        seen.setdefault(p, None)
    return list(seen)


def resolve(section: SandboxSection, *, kind: str, cwd: str, home: str, service_dirs: Sequence[str] = (),
            other_projects: Sequence[str] = (), socket: str | None = None, profile: str = "") -> Policy:
    """The policy of one task: ``cwd`` writable (and, in a linked worktree, its repository's ``.git``), the
    agent's state writable, the deny-list, ``service_dirs`` (state, runtime, config) and ``other_projects``
    hidden; a hidden path that holds the working directory is not hidden (the task's own project wins)."""
    if not section.enabled:
        return Policy(enabled=False, profile=profile, cwd=cwd)
    cwd = os.path.normpath(cwd)
    write = [cwd]
    common = git_common_dir(cwd)
    if common and not under(common, cwd):
        write.append(common)
    write += [_expand(os.path.join("~", p), home) for p in AGENT_STATE]
    write += [_expand(p, home) for p in section.write]
    write = _uniq(os.path.abspath(p) for p in write)
    hide = [_expand(os.path.join("~", p), home) for p in DEFAULT_HIDE]
    hide += [_expand(p, home) for p in section.hide]
    hide += [os.path.normpath(d) for d in service_dirs]
    hide += [os.path.normpath(p) for p in other_projects if not under(cwd, os.path.normpath(p))]
    hide = _uniq(h for h in (os.path.abspath(h) for h in hide) if not under(cwd, h) and h != "/")
    mdwe = section.memory_deny_write_execute
    if mdwe is None:
        mdwe = kind != "claude"
    network = section.network or "full"
    return Policy(enabled=True, profile=profile, cwd=cwd, write=write,
                  read_only=[os.path.join(cwd, ".aiwg")], hide=hide, network=network,
                  allow_hosts=list(section.allow_hosts) if network == "allow" else [],
                  socket=socket if section.socket == "read" else None, memory_deny_write_execute=mdwe)


def split_hidden(hide: Sequence[str], binds: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(inaccessible, masked)``: a hidden path that holds something bound (the runner's records in the
    state directory, a worktree, the socket) cannot be made inaccessible (what is below it would be lost
    with it), so it becomes an empty read-only tmpfs with those holes bound back."""
    gone: list[str] = []
    masked: list[str] = []
    for h in hide:
        if h in binds:
            continue  # listed writable on purpose: the bind wins
        (masked if any(under(b, h) for b in binds) else gone).append(h)
    return gone, masked
