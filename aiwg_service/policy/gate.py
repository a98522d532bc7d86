"""The one gate: may this project run, send, spend or listen this, for this caller, now?

Every subsystem asks here before it acts, through a narrow port that ``wiring`` hands it:

- ``untrusted(project)``: why a project's config may not run anything (rules, jobs, agent profiles,
  worktree setup) now, or None (the trust store and StrictModes, ``trust.verdict``);
- ``channel_refused(project, channel)``: why a project's events may not go to a messaging channel: only the
  channels the service-wide file lists for it (``messaging.project_channels``) are open;
- ``check_call(method, params, caller)``: may this RPC caller call this method with these params
  (``METHODS`` below is the table the README documents).

Refusals are logged (escaped, rate-limited) and published as ``policy.refused`` events, so the trace of the
run they stopped shows them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .identity import Caller, peer_identity

log = logging.getLogger("aiwg.policy")

ANYONE = "anyone"  # no identity needed (a liveness probe)
READ = "read"  # confined callers may, scoped to their project when the method takes one
SUBMIT = "submit"  # confined callers may, only in their own project
OWNER = "owner"  # the owner at a terminal only: trust, approvals, budgets, projects, service control

#: What a confined caller (an agent task, a rule's shell) may call. A method not listed is OWNER only, so a
#: method added later is closed to agents until someone decides otherwise.
METHODS: dict[str, str] = {
    "ping": ANYONE,
    "daemon.status": READ,
    "project.list": READ,
    "trust.show": READ,
    "task.list": READ,
    "task.get": READ,
    "task.stats": READ,
    "task.logs": READ,
    "automation.status": READ,
    "automation.trace": READ,
    "approval.list": READ,
    "webhook.list": READ,
    "events.list": READ,
    "events.subscribe": READ,
    "events.dlq": READ,
    "cron.list": READ,
    "messaging.status": READ,
    "budget.status": READ,
    "trace.get": READ,
    "executors.list": READ,
    "sandbox.check": READ,
    "doctor": READ,
    "task.submit": SUBMIT,
}


class Refused(Exception):
    """A gate said no; ``str()`` is the one-line reason the caller sees."""


class _Throttle:
    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        self.burst, self.window = burst, window
        self.seen: dict[str, list[float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        e = self.seen.get(key)
        if e is None or now - e[0] > self.window:
            if len(self.seen) > 1000:
                self.seen.clear()
            self.seen[key] = [now, 1]
            return True
        e[1] += 1
        return e[1] <= self.burst


def channel_allowed(allowed: dict[str, list[str]], project: str, channel: str) -> bool:
    """``channel`` (``telegram``: the bridge's own target; ``telegram:123``: that chat) is open to
    ``project`` if the service file lists it, or its bridge with ``:*``, for the project or for ``*``."""
    bridge, _, target = channel.partition(":")
    opened = [*allowed.get(project, []), *allowed.get("*", [])]
    if target:
        return channel in opened or f"{bridge}:*" in opened
    return bridge in opened or f"{bridge}:*" in opened


class Gate:
    """The policy decisions, from narrow views of the current state (no subsystem, no ``Service``)."""

    def __init__(self, untrusted: Callable[[str], str | None], channels: Callable[[], dict[str, list[str]]],
                 publish: Callable[[str, str | None, dict[str, Any], str], Any] | None = None) -> None:
        self.untrusted = untrusted
        self._channels = channels
        self._publish = publish
        self._throttle = _Throttle()
        self.refusals = 0

    def refuse(self, what: str, project: str | None, data: dict[str, Any]) -> None:
        """Record a refusal: the log (rate-limited per kind) and a ``policy.refused`` event."""
        self.refusals += 1
        if self._throttle.allow(data.get("kind", "?") + (project or "")):
            log.warning("refused: %s", what, extra={"PROJECT": project} if project else None)
        if self._publish is not None:
            self._publish("policy.refused", project, {"reason": what, **data}, "policy")

    # -- send ----------------------------------------------------------------------------------------
    def channel_refused(self, project: str | None, channel: str, event_id: str | None = None) -> str | None:
        """None if events of ``project`` may go to ``channel`` (``telegram``: the bridge's own target,
        ``telegram:123``: that chat); the owner's own notifications (no project) always may."""
        if project is None or channel_allowed(self._channels(), project, channel):
            return None
        return self._say(project, channel, event_id)

    def _say(self, project: str, channel: str, event_id: str | None) -> str:
        why = (f"project {project} may not send to {channel}: the service-wide file's "
               f"messaging.project_channels does not list it")
        self.refuse(why, project, {"kind": "send", "channel": channel, "caused_by": event_id})
        return why

    # -- call ----------------------------------------------------------------------------------------
    def rpc_hook(self, method: str, params: Any, conn: Any) -> str | None:
        """The RPC server's gate: the caller is looked up once per connection (``conn.caller``), on the
        first call that needs it (``ping`` never does)."""
        if METHODS.get(method) == ANYONE:
            return None
        caller = conn.caller
        if caller is None:
            caller = conn.caller = peer_identity(conn.peer_pid)
        if not caller.confined:
            return None
        return self.check_call(method, params, caller)

    def check_call(self, method: str, params: Any, caller: Caller) -> str | None:
        """None if ``caller`` may call ``method``; else the reason (also recorded)."""
        cls = METHODS.get(method, OWNER)
        if cls == ANYONE or not caller.confined:
            return None
        why: str | None = None
        if cls == OWNER:
            why = f"{method} is for the owner at a terminal, not {caller.describe()}"
        else:
            want = getattr(params, "project", None)
            if want is not None and caller.project is not None and _same(want) != caller.project:
                why = f"{method}: {caller.describe()} may only use its own project"
            elif cls == SUBMIT and caller.project is None:
                why = f"{method}: {caller.describe()} has no project of its own to submit to"
            elif want is None and caller.project is not None and hasattr(params, "project"):
                params.project = caller.project  # scope it to its project
        if why is not None:
            self.refuse(why, caller.project, {"kind": "call", "method": method, "caller": caller.kind,
                                              "ref": caller.ref, "pid": caller.pid})
        return why


def _same(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))
