"""What a launcher needs from the policy, in one call: for the mechanism that applies here, the unit
properties or the argv prefix, the environment to add (the proxy), the record stored with the task, or why
the task must be refused."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import msgspec

from .bwrap import bwrap_argv, netfwd_prefix
from .mechanism import choose
from .policy import PROXY_ADDR, Policy
from .proxy import proxy_env
from .units import unit_properties

__all__ = ["Confinement", "confine", "interactive_prefix"]


class Confinement(msgspec.Struct, kw_only=True):
    #: ``systemd-run -p`` properties (systemd mechanism)
    properties: list[str] = []
    #: prepended to the agent's argv (bubblewrap, and the proxy forwarder of ``network: allow``)
    prefix: list[str] = []
    env: dict[str, str] = {}
    #: stored with the task (its handle): mechanism and what the agent could touch
    record: dict[str, object] = {}
    #: why nothing may run (no mechanism available): the task fails with this
    refused: str | None = None
    #: the agent's program to exec (its real path: a symlink's directory may be hidden, its target is bound)
    program: str | None = None


def confine(policy: Policy | None, *, systemd: bool, keep: Sequence[str] = (), python: str | None = None,
            proxy_socket: str | None = None, path: str | None = None, program: str | None = None) -> Confinement:
    """``keep``: paths the launcher itself writes from inside a unit (bound writable, systemd only).
    ``program``: the agent's executable, kept visible (read-only) even where the policy hides its directory
    (a program under /tmp would vanish with the private /tmp)."""
    mech = choose(policy, systemd=systemd, path=path)
    if mech.name == "refused":
        return Confinement(refused=mech.detail, record={"mechanism": "refused"})
    if policy is None or mech.name == "off":
        return Confinement(record={"mechanism": "off"})
    if proxy_socket is not None:
        policy = msgspec.structs.replace(policy, proxy_socket=proxy_socket)
    if program and os.path.isabs(program):
        program = os.path.realpath(program)
        visible = _program_view(program, policy.hide)
        if visible not in policy.read_only:
            policy = msgspec.structs.replace(policy, read_only=[*policy.read_only, visible])
    else:
        program = None
    for state in policy.write[1:]:  # the agent's state directory (``~/.claude``): it must exist to be bound
        if state.endswith("/.claude") and not os.path.lexists(state):
            with contextlib.suppress(OSError):
                os.makedirs(state, mode=0o700)
    record: dict[str, object] = {"mechanism": mech.name, **policy.summary()}
    env: dict[str, str] = {}
    if policy.network == "allow" and policy.proxy_socket:
        env = proxy_env(PROXY_ADDR)
        record["proxy"] = policy.proxy_socket
    if mech.name == "systemd":
        return Confinement(properties=unit_properties(policy, keep=keep), prefix=netfwd_prefix(policy, python),
                           env=env, record=record, program=program)
    return Confinement(prefix=bwrap_argv(policy, bwrap=mech.detail, python=python), env=env, record=record,
                       program=program)


def _program_view(program: str, hidden: Sequence[str]) -> str:
    """What of the agent's program to keep visible: its directory (a script finds its sibling modules there),
    or the file alone where that directory is a shared one (/, /tmp, home) or one the policy hides."""
    folder = os.path.dirname(program)
    shared = {"/", "/tmp", "/var/tmp", os.path.expanduser("~")}
    if folder in shared or any(folder == h or folder.startswith(h.rstrip("/") + "/") for h in hidden):
        return program
    return folder


def interactive_prefix(policy: Policy, *, program: str, env_names: Sequence[str]) -> list[str]:
    """An interactive session under a user manager: the agent as its own transient service with a pseudo-terminal
    (``systemd-run --pty``), so it gets the unit's sandbox.  (Started from a tmux pane, which inherits the
    service's own sandbox, bubblewrap could not create its namespaces.)  The pane keeps the client, which
    forwards the terminal and returns the agent's exit status."""
    real = os.path.realpath(program)
    visible = _program_view(real, policy.hide)
    if visible not in policy.read_only:
        policy = msgspec.structs.replace(policy, read_only=[*policy.read_only, visible])
    for state in policy.write[1:]:
        if state.endswith("/.claude") and not os.path.lexists(state):
            with contextlib.suppress(OSError):
                os.makedirs(state, mode=0o700)
    argv = ["systemd-run", "--user", "--pty", "--wait", "--collect", "--quiet", "--same-dir",
            "--description=aiwg interactive session", *(f"--setenv={n}" for n in env_names)]
    for prop in unit_properties(policy):
        argv += ["-p", prop]
    return [*argv, "--", real]
