"""Actions: queue an agent task, run a shell command, notify, run the doctor, emit an event, POST a webhook.

Actions never import the task supervisor or a messaging bridge: they reach them through ``Hooks`` (injected
callables and the bus), so the engine stays testable with plain functions and the subsystems stay decoupled.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events.bus import EventBus
from .conditions import Ctx, run_shell
from .matching import render

log = logging.getLogger("aiwg.automation")

SubmitTask = Callable[[str, str, "str | None", int, str, "float | None", dict[str, Any]], Any]
Doctor = Callable[[str], Any]
WEBHOOK_TIMEOUT = 10.0
PRIORITY_NAMES = {"low": -10, "normal": 0, "medium": 0, "high": 10, "urgent": 20, "critical": 20}


class ActionFailed(Exception):
    """An action did not do its job; ``detail`` goes into the trace."""

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


@dataclass(slots=True)
class Hooks:
    """What actions may reach: the bus and the two injected callables."""

    bus: EventBus
    submit_task: SubmitTask
    doctor: Doctor


async def _maybe_await(v: Any) -> Any:
    return await v if inspect.isawaitable(v) else v


def origin_of(ctx: Ctx) -> dict[str, Any]:
    out = {"rule_id": ctx.rule_id, "run_id": ctx.run_id, "project": ctx.project, "event_id": ctx.event.id,
           "event_type": ctx.event.type, "chain_depth": ctx.depth + 1}
    if ctx.approval_id is not None:
        out["approval_id"] = ctx.approval_id
    delivery = ctx.event.data.get("delivery_id") if ctx.event.type.startswith("webhook.") else None
    if delivery is not None:
        out["webhook_delivery_id"] = delivery
    return out


class Action:
    kind = "action"

    def __init__(self, continue_on_error: bool = False) -> None:
        self.continue_on_error = continue_on_error

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        """What the action would do for this event (``automation.test``); must not act."""
        return {"kind": self.kind}


class AgentAction(Action):
    kind = "agent"

    def __init__(self, prompt: str, agent: str | None, priority: int, timeout_s: float | None, source: str = "rule",
                 continue_on_error: bool = False) -> None:
        super().__init__(continue_on_error)
        self.prompt, self.agent, self.priority, self.timeout_s, self.source = prompt, agent, priority, timeout_s, source

    def _prompt(self, ctx: Ctx) -> str:
        return render(self.prompt, ctx.event, ctx.paths, {"rule_id": ctx.rule_id, "run_id": ctx.run_id})

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "agent", "prompt": self._prompt(ctx), "agent": self.agent, "priority": self.priority}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        prompt = self._prompt(ctx)
        try:
            task_id = await _maybe_await(hooks.submit_task(ctx.project, prompt, self.agent, self.priority,
                                                           self.source, self.timeout_s, origin_of(ctx)))
        except Exception as exc:
            raise ActionFailed(f"cannot queue the agent task: {exc}", {"prompt": prompt}) from exc
        return {"prompt": prompt, "agent": self.agent, "priority": self.priority, "task_id": str(task_id)}


class ShellAction(Action):
    """Not templated on purpose (a file name must never become shell code): use ``$AIWG_EVENT_PATH`` etc."""

    kind = "shell"

    def __init__(self, cmd: str, timeout_s: float, continue_on_error: bool = False) -> None:
        super().__init__(continue_on_error)
        self.cmd, self.timeout_s = cmd, timeout_s

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "shell", "command": self.cmd, "timeout_seconds": self.timeout_s}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        res = await run_shell(self.cmd, ctx, self.timeout_s)
        if res["timed_out"]:
            raise ActionFailed(f"timed out after {self.timeout_s:g}s", res)
        if res["exit"] != 0:
            raise ActionFailed(f"exited with status {res['exit']}", res)
        return res


class NotifyAction(Action):
    """Logged, and published as ``notify.request`` so a messaging bridge can deliver it when one exists."""

    kind = "notify"

    def __init__(self, message: str, channel: str | None, continue_on_error: bool = False) -> None:
        super().__init__(continue_on_error)
        self.message, self.channel = message, channel

    def _message(self, ctx: Ctx) -> str:
        return render(self.message, ctx.event, ctx.paths, {"rule_id": ctx.rule_id, "run_id": ctx.run_id})

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "notify", "message": self._message(ctx), "channel": self.channel}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        msg = self._message(ctx)
        log.info("rule %s: %s", ctx.rule_id, msg, extra={"PROJECT": ctx.project})
        ev = hooks.bus.publish("notify.request", ctx.project,
                               {"message": msg, "channel": self.channel, "rule_id": ctx.rule_id,
                                "origin": origin_of(ctx)}, source="automation")
        return {"message": msg, "channel": self.channel, "event_id": ev.id}


class DoctorAction(Action):
    kind = "doctor"

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "doctor"}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        try:
            res = await _maybe_await(hooks.doctor(ctx.project))
        except Exception as exc:
            raise ActionFailed(f"doctor failed: {exc}") from exc
        checks = res.get("checks", []) if isinstance(res, dict) else []
        if not (isinstance(res, dict) and res.get("ok")):
            bad = [c.get("name", "?") for c in checks if not c.get("ok")]
            raise ActionFailed(f"doctor: {len(bad)} check(s) failed: {', '.join(bad)}", {"checks": checks})
        return {"ok": True, "checks": checks}


class EmitAction(Action):
    """Publishes a new event (rules chain); it carries ``rule_id`` and ``origin`` so its rule can ignore it."""

    kind = "emit"

    def __init__(self, type_: str, data: dict[str, Any], continue_on_error: bool = False) -> None:
        super().__init__(continue_on_error)
        self.type, self.data = type_, data

    def _data(self, ctx: Ctx) -> dict[str, Any]:
        extra = {"rule_id": ctx.rule_id, "run_id": ctx.run_id}
        out = {k: render(v, ctx.event, ctx.paths, extra) if isinstance(v, str) else v for k, v in self.data.items()}
        out["rule_id"] = ctx.rule_id
        out["origin"] = origin_of(ctx)
        out["chain_depth"] = ctx.depth + 1
        return out

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "emit", "type": self.type, "data": self._data(ctx)}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        ev = hooks.bus.publish(self.type, ctx.project, self._data(ctx), source=f"rule:{ctx.rule_id}")
        return {"type": self.type, "event_id": ev.id}


class ApproveAction(Action):
    """A gate: the engine parks the run here until a human decides (see ``approvals``); ``run`` never acts."""

    kind = "approve"

    def __init__(self, message: str | None, timeout_s: float, on_timeout: str, approvers: list[str]) -> None:
        super().__init__(False)
        self.message, self.timeout_s, self.on_timeout, self.approvers = message, timeout_s, on_timeout, approvers

    def render_message(self, ctx: Ctx) -> str | None:
        if not self.message:
            return None
        return render(self.message, ctx.event, ctx.paths, {"rule_id": ctx.rule_id, "run_id": ctx.run_id})

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "approve", "message": self.render_message(ctx), "timeout_minutes": self.timeout_s / 60,
                "on_timeout": self.on_timeout, "approvers": self.approvers}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:  # pragma: no cover - the engine intercepts
        raise ActionFailed("an approve action is handled by the engine")


def _post(url: str, body: bytes) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "aiwg-service"})
    try:
        with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT) as resp:
            return resp.status, resp.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(2000).decode(errors="replace") if exc.fp else ""


class WebhookAction(Action):
    """The AIWG daemon's ``webhook`` (a no-op there): POST the event and message as JSON, in a thread.

    A URL that carries a token (Slack, Discord) belongs in the environment: ``url_env`` names the variable,
    read at each run, and traces show ``$NAME``, never the URL.
    """

    kind = "webhook"

    def __init__(self, url: str | None, message: str | None, continue_on_error: bool = False, *,
                 url_env: str | None = None) -> None:
        super().__init__(continue_on_error)
        self.url_env = url_env
        self.url = url if url is not None else f"${url_env}"
        self.message = message

    def _target(self) -> str:
        if self.url_env is None:
            return self.url
        url = os.environ.get(self.url_env, "")
        if not url.startswith(("http://", "https://")):
            raise ActionFailed(f"${self.url_env} is unset or not an http(s) URL", {"url": self.url})
        return url

    def _body(self, ctx: Ctx) -> dict[str, Any]:
        msg = render(self.message, ctx.event, ctx.paths) if self.message else None
        from msgspec import to_builtins

        return {"rule_id": ctx.rule_id, "run_id": ctx.run_id, "project": ctx.project, "message": msg,
                "event": to_builtins(ctx.event)}

    def describe(self, ctx: Ctx) -> dict[str, Any]:
        return {"kind": "webhook", "url": self.url, "body": self._body(ctx)}

    async def run(self, ctx: Ctx, hooks: Hooks) -> dict[str, Any]:
        body = json.dumps(self._body(ctx), ensure_ascii=False).encode()
        target = self._target()
        try:
            status, text = await asyncio.to_thread(_post, target, body)
        except Exception as exc:
            why = str(exc).replace(target, self.url)  # never the URL that came from the environment
            raise ActionFailed(f"POST {self.url} failed: {why}", {"url": self.url}) from exc
        res = {"url": self.url, "status": status, "response": text[:500]}
        if not 200 <= status < 300:
            raise ActionFailed(f"POST {self.url} answered HTTP {status}", res)
        return res
