"""The policy as systemd unit properties, for ``systemd-run -p`` of a task's transient unit.

Scored by ``systemd-analyze security`` at about 2 (the unit without them: 9.8).  What is left open is on
purpose: the network (``full`` is the default), ``AF_UNIX`` (git, python, node all use it), running as the
owner (the agent is the owner's), and ``MemoryDenyWriteExecute`` for node (its JIT needs W+X memory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .policy import Policy, split_hidden

__all__ = ["HARDENING", "SYSCALLS_DENIED", "quote", "unit_properties"]

#: taken from @system-service: nothing an agent (an editor, git, a compiler, a test run) needs
SYSCALLS_DENIED = "~@privileged @debug @mount @obsolete @cpu-emulation @clock @module @raw-io @reboot @swap"

HARDENING: tuple[str, ...] = (
    "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes", "PrivateDevices=yes", "DevicePolicy=closed",
    "PrivateIPC=yes", "NoNewPrivileges=yes", "RestrictSUIDSGID=yes", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
    "ProtectHostname=yes", "ProtectProc=invisible", "LockPersonality=yes", "RestrictRealtime=yes",
    "RestrictNamespaces=yes", "KeyringMode=private", "CapabilityBoundingSet=", "AmbientCapabilities=",
    "SystemCallArchitectures=native", "SystemCallFilter=@system-service", f"SystemCallFilter={SYSCALLS_DENIED}",
    "SystemCallErrorNumber=EPERM",
)


def quote(path: str) -> str:
    """A path as one word of a systemd path list (``:`` separates source and destination there)."""
    p = path.replace("\\", "\\\\").replace(":", "\\:")
    return f'"{p}"' if any(c.isspace() or c == '"' for c in p) else p


def unit_properties(policy: Policy, *, keep: Sequence[str] = (),
                    exists: Callable[[str], bool] = os.path.lexists) -> list[str]:
    """``Name=value`` strings (each for one ``-p``).  ``keep``: paths the launcher itself must write inside
    the unit (the runner's run records and the task's log), bound like the writable paths.  Paths that do not
    exist are left out (every mount costs time at each start; the ``-`` prefix covers a path that goes away
    before the unit starts)."""
    if not policy.enabled:
        return []
    props = list(HARDENING)
    if os.geteuid() != 0:
        # an unprivileged user manager sets up mount namespaces only inside a user namespace of the unit's own
        props.append("PrivateUsers=yes")
    props.append(f"MemoryDenyWriteExecute={'yes' if policy.memory_deny_write_execute else 'no'}")
    binds = [p for p in (*policy.write, *keep) if exists(p)]
    ro_binds = [p for p in (*policy.read_only, *([policy.socket] if policy.socket else []),
                            *([os.path.dirname(policy.proxy_socket)] if policy.proxy_socket else [])) if exists(p)]
    gone, masked = split_hidden([h for h in policy.hide if exists(h)], [*binds, *ro_binds])
    props += [f"TemporaryFileSystem={quote(m)}:ro" for m in masked]
    if gone:
        props.append("InaccessiblePaths=" + " ".join("-" + quote(h) for h in gone))
    # BindPaths, not ReadWritePaths: a bind's source is the host's path, so it also works for paths under
    # the private /tmp or under a masked directory
    if binds:
        props.append("BindPaths=" + " ".join("-" + quote(b) for b in binds))
    if ro_binds:
        props.append("BindReadOnlyPaths=" + " ".join("-" + quote(b) for b in ro_binds))
    if policy.network == "none":
        props += ["PrivateNetwork=yes", "IPAddressDeny=any", "RestrictAddressFamilies=AF_UNIX"]
    elif policy.network == "allow":
        # Only loopback inside; the proxy's socket is bound in and ``netfwd`` serves it on 127.0.0.1
        props += ["PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]
    else:
        props.append("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK")
    return props
