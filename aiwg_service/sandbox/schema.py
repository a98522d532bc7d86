"""The ``sandbox`` section of an agent profile, and how a project file may only narrow it.

In the service's own config file (the owner's) a profile may turn the sandbox off (``"sandbox": "off"``) or
widen it (more writable paths, the service socket read-only, a wider network); a project's
``.aiwg/daemon.json`` travels with a cloned repository, so whatever it says is *intersected* with the
profile it overrides: it can hide more, write less, reach less, never the reverse (:func:`narrow`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = ["NETWORK_ORDER", "Network", "SandboxSection", "SocketAccess", "narrow", "section_of"]

Network = Literal["full", "allow", "none"]
SocketAccess = Literal["none", "read"]
#: wider first: a narrowing may only move right
NETWORK_ORDER: tuple[str, ...] = ("full", "allow", "none")
Host = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:\[\]/*-]{1,255}$")]
PathStr = Annotated[str, Meta(min_length=1, max_length=4096)]


class SandboxSection(Struct, kw_only=True):
    """What an agent of this profile may touch.  Defaults: on, project-only writes, full network."""

    #: false: no sandbox at all (only in the service's own config: a project file cannot turn it off)
    enabled: bool = True
    #: more writable paths (``~/`` is the owner's home): the agent's own state beyond ``~/.claude``
    write: list[PathStr] = []
    #: more paths made invisible, on top of the built-in deny-list (keys, cloud credentials, browsers)
    hide: list[PathStr] = []
    #: unset: ``full`` (unset in a project file: no opinion)
    network: Network | None = None
    #: with ``network: allow``: host names (through the filtering proxy) and IP addresses or CIDRs
    #: (systemd's IP filter); ``host:port`` limits a name to one port
    allow_hosts: list[Host] = []
    #: ``read``: the service's socket is visible (its calls then carry the task's identity)
    socket: SocketAccess | None = None
    #: ``MemoryDenyWriteExecute``; unset: on for ``shell``/``command`` kinds, off for ``claude`` (node's JIT
    #: maps writable+executable memory: V8 aborts at start-up under it)
    memory_deny_write_execute: bool | None = None


OFF = SandboxSection(enabled=False)


def section_of(value: SandboxSection | str | None) -> SandboxSection:
    """The profile's ``sandbox`` value as a section: ``"off"``/``"on"`` are shorthands."""
    if value is None or value == "on":
        return SandboxSection()
    if value == "off":
        return OFF
    assert isinstance(value, SandboxSection)
    return value


def narrow(base: SandboxSection, project: SandboxSection | None) -> SandboxSection:
    """``base`` (the owner's) narrowed by ``project``'s: never wider than ``base`` in any respect."""
    if project is None:
        return base
    if not base.enabled:  # the owner turned it off; a project may still turn it on
        return project if project.enabled else base
    base_net = base.network or "full"
    net = base_net
    if project.network is not None and NETWORK_ORDER.index(project.network) > NETWORK_ORDER.index(net):
        net = project.network
    hosts = list(base.allow_hosts)
    if net == "allow" and project.network == "allow":
        # base full: the project's list is the narrowing; base allow: only hosts both name
        hosts = list(project.allow_hosts) if base_net == "full" else [h for h in hosts if h in project.allow_hosts]
    mdwe = base.memory_deny_write_execute
    if project.memory_deny_write_execute:
        mdwe = True
    return SandboxSection(
        enabled=True,
        write=[w for w in base.write if w in project.write] if project.write else list(base.write),
        hide=[*base.hide, *(h for h in project.hide if h not in base.hide)],
        network=net,  # type: ignore[arg-type]
        allow_hosts=hosts if net == "allow" else [],
        socket="none" if project.socket == "none" else base.socket,
        memory_deny_write_execute=mdwe,
    )
