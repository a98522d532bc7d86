"""The policy as a bubblewrap argv prefix: where there is no systemd user manager (the foreground, a
container), and for interactive sessions (a tmux pane is not a unit).

bubblewrap gives the filesystem view, private /tmp, /dev and /proc (a new pid namespace, so
``/proc/PID/root`` of the owner's other processes is out of reach), no new privileges and no
capabilities, and a private network namespace for ``none``/``allow``.  It has no system-call filter of
its own here (``--seccomp`` takes a compiled program; systemd's list is not reproduced): the unit
mechanism is the stronger one and is preferred whenever a user manager is reachable.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from .policy import PROXY_ADDR, Policy, split_hidden, under

__all__ = ["NETFWD", "bwrap_argv", "bwrap_path", "netfwd_prefix"]

NETFWD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "netfwd.py")


def bwrap_path(environ_path: str | None = None) -> str | None:
    return shutil.which("bwrap", path=environ_path)


def netfwd_prefix(policy: Policy, python: str | None = None) -> list[str]:
    """With ``network: allow``: the forwarder that serves the proxy on 127.0.0.1 inside the namespace."""
    if not policy.enabled or policy.network != "allow" or not policy.proxy_socket:
        return []
    return [python or sys.executable, "-I", "-S", NETFWD, PROXY_ADDR, policy.proxy_socket, "--"]


def bwrap_argv(policy: Policy, *, bwrap: str = "bwrap", keep: Sequence[str] = (), python: str | None = None,
               exists=os.path.lexists) -> list[str]:
    """``[bwrap, ..., "--"]`` (plus the forwarder with ``network: allow``): prepend it to the agent's argv."""
    if not policy.enabled:
        return []
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if policy.network in ("none", "allow"):
        argv.append("--unshare-net")
    binds = [p for p in (*policy.write, *keep) if exists(p)]
    ro_binds = [p for p in (*policy.read_only, *([policy.socket] if policy.socket else []),
                            *([os.path.dirname(policy.proxy_socket)] if policy.proxy_socket else [])) if exists(p)]
    gone, masked = split_hidden(policy.hide, [*binds, *ro_binds])
    # bubblewrap applies its operations in order: masks first, then the holes bound back into them (a bind
    # under /tmp lands in the private /tmp), then what is hidden (possibly inside a bound tree)
    in_tmp = [m for m in masked if m == "/tmp" or m.startswith("/tmp/")]
    masked = [m for m in masked if exists(m) and m not in in_tmp]
    for m in masked:
        argv += ["--tmpfs", m]
    for b in binds:
        argv += ["--bind", b, b]
    for b in ro_binds:
        argv += ["--ro-bind", b, b]
    for h in gone:
        if not exists(h):
            continue
        if (h == "/tmp" or h.startswith("/tmp/")) and not any(under(h, b) for b in binds):
            continue  # already gone with the private /tmp
        if os.path.isdir(h):
            argv += ["--perms", "0000", "--tmpfs", h, "--remount-ro", h]
        else:
            argv += ["--ro-bind", "/dev/null", h]
    for m in masked:
        argv += ["--remount-ro", m]
    argv += ["--chdir", policy.cwd, "--"]
    return argv + netfwd_prefix(policy, python)
