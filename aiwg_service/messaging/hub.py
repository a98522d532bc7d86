"""The messaging subsystem: bridges out (notify, subscriptions) and in (commands), one hub for all.

Outbound: each bridge is its own bus subscriber (``messaging.<bridge>``), so a slow or failing platform
never holds up the bus or the other bridges; a send that fails is retried by the bus with backoff and
then dead-lettered like any other subscriber's event (``aiwgctl events replay`` re-sends it to that
bridge). A permanent failure (a revoked token) is dead-lettered at once.

Inbound: a bridge hands each command to ``receive``; the inbox (``messaging.db``) drops duplicates and
remembers it; then the command is authenticated, rate-limited and run, each in its own task so a long
``/ask`` never stops a bridge from reading.

Users and bridges come from the service-wide file only: a project's file lives in its repository, and
whoever can commit there must not be able to grant themselves commands. A project's file may add
``subscriptions`` for its own events.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..events.bus import compile_pattern
from ..owned import OwnedTasks
from ..protocol import Event
from .binding import ChatProjects
from .bridge import Bridge
from .commands import CommandRunner
from .model import Button, Inbound, OutMessage, SendError, Severity
from .ports import ServicePorts
from .schema import BRIDGES, MessagingSection, Subscription, default_subscriptions
from .store import MessagingStore

if TYPE_CHECKING:
    from ..events.bus import EventBus

log = logging.getLogger("aiwg.messaging")

Register = Callable[[str, Callable[..., Any]], None]
STOP_GRACE_S = 5.0


def severity_of(event: Event) -> Severity:
    sev = event.data.get("severity")
    if sev in ("info", "warning", "critical"):
        return sev
    t = event.type
    if "critical" in t:
        return "critical"
    if t.endswith((".failed", ".timeout", ".degraded", ".loop_detected", ".error", ".interrupted")):
        return "warning"
    return "info"


def event_message(event: Event, severity: Severity | None = None) -> OutMessage:
    """A readable message for an event the user subscribed to."""
    d = event.data
    sev = severity or severity_of(event)
    where = f" · {Path(event.project).name}" if event.project else ""
    if event.type == "notify.request":
        return OutMessage(str(d.get("message", "")), severity=sev)
    if event.type.startswith("task."):
        word = event.type.split(".", 1)[1]
        text = str(d.get("prompt", ""))[:300]
        if d.get("error"):
            text += f"\nerror: {d['error']}"
        return OutMessage(text, title=f"Task {d.get('id', '?')} {word}{where}", severity=sev)
    if event.type == "approval.requested":
        aid = str(d.get("approval_id") or d.get("id") or "?")
        summary = d.get("summary") or d.get("title") or d.get("prompt") or d.get("message") or ""
        text = f"{summary}\nReply /approve {aid} or /reject {aid} [reason]".strip()
        return OutMessage(text, title=f"Approval needed: {aid}{where}", severity=sev,
                          buttons=[Button("Approve", "approve", aid), Button("Reject", "reject", aid)])
    if event.type == "automation.loop_detected":
        return OutMessage(str(d.get("message") or d.get("reason") or ""),
                          title=f"Rule {d.get('rule_id', '?')} paused: loop detected{where}", severity=sev)
    text = str(d.get("message") or "") or msgspec.json.encode(d).decode()[:1000]
    return OutMessage(text, title=f"{event.type}{where}", severity=sev)


def build_bridge(name: str, section: MessagingSection, env: Mapping[str, str], host: Any) -> Bridge:
    if name == "telegram":
        from .telegram import TelegramBridge

        return TelegramBridge(section.telegram, env, host)
    if name == "slack":
        from .slack import SlackBridge

        return SlackBridge(section.slack, env, host)
    if name == "discord":
        from .discord_bridge import DiscordBridge

        return DiscordBridge(section.discord, env, host)
    from .apprise_bridge import AppriseBridge

    return AppriseBridge(section.apprise, env, host)


class MessagingSubsystem:
    name = "messaging"

    def __init__(self, bus: EventBus, register: Register, configs: Callable[[], Any], state_dir: Path,
                 ports: ServicePorts, env: Mapping[str, str] | None = None) -> None:
        self.bus = bus
        self.configs = configs
        self.state_dir = state_dir
        self.ports = ports
        self.env = env if env is not None else os.environ
        self.section = MessagingSection()
        self.store: MessagingStore | None = None
        self.bridges: dict[str, Bridge] = {}
        self._subs: dict[str, Any] = {}
        self._keys: dict[str, Any] = {}
        #: commands being answered: a crash marks the inbox row failed (never ``started`` for good)
        self._handling = OwnedTasks("messaging", log)
        self._resumed: set[str] = set()
        self._matchers: list[tuple[Subscription, Callable[[str], bool], str | None]] = []
        self.runner = CommandRunner(ports, lambda: self.section, self.bridge_states,
                                    ChatProjects(state_dir / "messaging-projects.json") if state_dir else None)
        self.running = False
        register("messaging.status", lambda _p, _c: self.health())
        register("messaging.notify", self.rpc_notify)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.store = MessagingStore(self.state_dir)
        self.running = True
        await self.apply(self.configs())

    async def stop(self) -> None:
        self.running = False
        # commands in flight get a moment to answer; the inbox covers the rest
        await self._handling.close(grace=STOP_GRACE_S)
        for name in list(self.bridges):
            await self._drop(name)
        if self.store is not None:
            self.store.close()
            self.store = None

    async def apply(self, configs: Any) -> None:
        if not self.running or configs is None:
            return
        self.section = configs.service.messaging
        self.runner.reconfigure()
        self._matchers = []
        subs = self.section.subscriptions
        for sub in subs if subs is not None else default_subscriptions():
            self._matchers.append((sub, compile_pattern(sub.events), None))
        for root, pr in configs.projects.items():  # a project's file adds subscriptions for its own events
            for sub in pr.config.messaging.subscriptions or []:
                self._matchers.append((sub, compile_pattern(sub.events), root))
        for name in BRIDGES:
            cfg = getattr(self.section, name)
            key = (self.section.enabled, cfg, self.section.retries,
                   tuple(self.env.get(v) for k, v in msgspec.structs.asdict(cfg).items() if k.endswith("_env")))
            if name in self.bridges and self._keys.get(name) == key:
                continue
            if name in self.bridges:
                await self._drop(name)
            if not self.section.enabled or not cfg.enabled:
                bridge = Bridge(cfg, self.env, self, name)
                bridge.disable("messaging.enabled is false" if not self.section.enabled
                               else f"messaging.{name}.enabled is false")
            else:
                try:
                    bridge = build_bridge(name, self.section, self.env, self)
                    await bridge.start()
                except Exception as exc:  # a broken bridge must never take the service down
                    log.exception("messaging: the %s bridge could not start", name)
                    bridge = Bridge(cfg, self.env, self, name)
                    bridge.state.state = "error"
                    bridge.state.error(f"could not start: {type(exc).__name__}: {exc}")
            self.bridges[name] = bridge
            self._keys[name] = key
            if bridge.state.enabled:
                self._subs[name] = self.bus.subscribe("*", self._deliverer(bridge), name=f"messaging.{name}",
                                                      retries=self.section.retries)

    async def _drop(self, name: str) -> None:
        sub = self._subs.pop(name, None)
        if sub is not None:
            self.bus.unsubscribe(sub)
        bridge = self.bridges.pop(name, None)
        if bridge is not None:
            try:
                await bridge.stop()
            except Exception:
                log.exception("messaging: stopping the %s bridge failed", name)

    # -- status ----------------------------------------------------------------------------------------
    def bridge_states(self) -> dict[str, dict[str, Any]]:
        return {n: b.state.as_dict() for n, b in self.bridges.items()}

    def health(self) -> dict[str, Any]:
        states = self.bridge_states()
        active = [n for n, s in states.items() if s["enabled"]]
        connected = [n for n, s in states.items() if s["state"] in ("connected", "sending-only")]
        summary = " ".join(f"{n}:{s['state']}" for n, s in states.items())
        return {"enabled": bool(self.section.enabled and active), "adapters": len(active),
                "connected": len(connected), "summary": summary, "bridges": states,
                "commands": {"run": self.runner.ran, "refused": self.runner.refused,
                             "rate_limited": self.runner.limited},
                "users": len(self.section.users)}

    # -- outbound --------------------------------------------------------------------------------------
    def route(self, event: Event, bridge: str) -> list[tuple[OutMessage, str | None]]:
        """The messages ``bridge`` should send for ``event`` (usually none)."""
        if event.type == "notify.request":
            channel = event.data.get("channel")
            target: str | None = None
            if isinstance(channel, str) and channel:
                b, _, t = channel.partition(":")
                if b in BRIDGES:
                    if b != bridge:
                        return []
                    target = t or None
            if self._refused(event.project, bridge, target, event):  # a project's rule picked the channel
                return []
            return [(event_message(event), target)]
        for sub, matches, root in self._matchers:
            if root is not None and event.project != root:
                continue
            if not matches(event.type):
                continue
            target = None
            if sub.channel:
                b, _, t = sub.channel.partition(":")
                if b != bridge:
                    continue
                target = t or None
            if root is not None and self._refused(root, bridge, target, event):  # the project's own subscription
                return []
            return [(event_message(event, sub.severity), target)]
        return []

    def _refused(self, project: str | None, bridge: str, target: str | None, event: Event) -> bool:
        gate = getattr(self.ports, "channel_refused", None)
        return gate is not None and gate(project, f"{bridge}:{target}" if target else bridge, event.id) is not None

    def _deliverer(self, bridge: Bridge) -> Callable[[Event], Any]:
        sub_name = f"messaging.{bridge.name}"

        async def deliver(event: Event) -> None:
            for msg, target in self.route(event, bridge.name):
                if target is None and not bridge.has_default_target():
                    continue
                try:
                    await bridge.send(msg, target)
                except SendError as exc:
                    bridge.state.send_failures += 1
                    bridge.state.error(str(exc))
                    if exc.permanent:
                        log.error("messaging: %s cannot deliver %s: %s (not retried)", bridge.name, event.id, exc)
                        self.bus.dead_letter(event, sub_name, f"SendError: {exc}", 1)
                        continue
                    raise

        return deliver

    async def rpc_notify(self, params: Any, _conn: Any) -> dict[str, Any]:
        event = self.bus.publish("notify.request", None, {"message": params.message, "channel": params.channel,
                                                          "severity": params.severity}, "cli")
        targets = [n for n, b in self.bridges.items() if b.state.enabled and self.route(event, n)]
        return {"event_id": event.id, "bridges": targets}

    # -- inbound ---------------------------------------------------------------------------------------
    def receive(self, bridge: Bridge, inbound: Inbound, offset: int | None = None) -> bool:
        """A command arrived: record it (once), then run it in its own task. False for a duplicate."""
        assert self.store is not None
        if not self.store.receive(bridge.name, inbound.key, inbound.record(), offset):
            log.info("messaging: %s delivered %s again; ignored", bridge.name, inbound.key)
            return False
        bridge.state.messages_in += 1
        self._spawn_command(bridge, inbound)
        return True

    def ready(self, bridge: Bridge) -> None:
        """A bridge connected: finish what an earlier run received but did not complete (once per run:
        a reconnect must not mistake this run's commands in flight for a previous run's)."""
        if self.store is None or bridge.name in self._resumed:
            return
        self._resumed.add(bridge.name)
        for key, state, rec in self.store.pending(bridge.name):
            inbound = Inbound(rec["platform"], rec["user_id"], rec["chat_id"], rec["text"], key, rec.get("display", ""))
            if state == "received":
                log.info("messaging: running %s command %s received before a restart", bridge.name, key)
                self._spawn_command(bridge, inbound)
            else:
                self.store.mark(bridge.name, key, "done")
                text = (f"The service restarted while answering “{inbound.text[:100]}”, so this answer is lost. "
                        f"Send it again if you still need it.")
                self._spawn(self._reply(bridge, inbound, OutMessage(text, reply=True)))

    def _spawn(self, coro: Any, what: str = "a reply") -> None:
        self._handling.spawn(coro, what)

    def _spawn_command(self, bridge: Bridge, inbound: Inbound) -> None:
        def failed(exc: BaseException) -> None:
            if self.store is not None:
                with contextlib.suppress(Exception):  # the store may be closing
                    self.store.mark(bridge.name, inbound.key, "failed")
            if self.running:
                self._spawn(self._reply(bridge, inbound, OutMessage(
                    f"That command failed: {str(exc)[:200] or type(exc).__name__}", severity="warning", reply=True)))

        self._handling.spawn(self.handle(bridge, inbound), f"{bridge.name} command {inbound.key}", on_error=failed)

    async def handle(self, bridge: Bridge, inbound: Inbound) -> None:
        store = self.store
        assert store is not None

        async def reply(msg: OutMessage) -> None:
            await self._reply(bridge, inbound, msg)

        refusal = self.runner.admit(inbound)
        if refusal is not None:
            store.mark(bridge.name, inbound.key, "refused")
            if refusal.text:
                await reply(refusal)
            return
        store.mark(bridge.name, inbound.key, "started")
        await self.runner.run(inbound, reply)
        with contextlib.suppress(Exception):  # the store closes on stop; the reply went out already
            store.mark(bridge.name, inbound.key, "done")

    async def _reply(self, bridge: Bridge, inbound: Inbound, msg: OutMessage) -> None:
        try:
            if inbound.responder is not None:
                await inbound.responder(msg)
            else:
                await bridge.send(msg, inbound.chat_id)
        except Exception as exc:
            bridge.state.send_failures += 1
            bridge.state.error(f"reply failed: {exc}")
            log.error("messaging: could not answer %s on %s: %s", inbound.user_key, bridge.name, exc)
