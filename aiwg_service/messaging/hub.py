"""The messaging subsystem: bridges out (notify, subscriptions) and in (commands), one hub for all.

Outbound: each bridge is its own bus subscriber (``messaging.<bridge>``), which only writes the messages
an event makes into the bridge's outbox (``messaging.db``); the bridge's courier (``outbox``) sends them
in order and removes each once the platform acknowledged it. A platform that is away keeps them waiting,
across restarts too, and gets them when it is back; only a permanent refusal (a 403, an unknown chat)
goes to the bus's dead-letter queue (``aiwgctl events replay`` queues it again). Answers to commands go
through the same outbox, unless the platform has a faster path for them (an interaction response); if
that path fails (Discord's interaction token expires after 15 minutes), the answer goes to the chat.

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
from ..protocol import INVALID_PARAMS, Event, RpcError
from .announce import event_message
from .binding import ChatProjects
from .bridge import Bridge, secret_of
from .commands import CommandRunner, as_command
from .model import Inbound, OutMessage
from .outbox import Courier, message_of, message_record
from .ports import ServicePorts
from .schema import BRIDGES, MessagingSection, Subscription, default_subscriptions
from .store import MessagingStore

if TYPE_CHECKING:
    from ..events.bus import EventBus

log = logging.getLogger("aiwg.messaging")

Register = Callable[[str, Callable[..., Any]], None]
STOP_GRACE_S = 5.0


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
        self.couriers: dict[str, Courier] = {}
        self._decided_sub: Any = None
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
        self._decided_sub = self.bus.subscribe("approval.*", self._on_approval, name="messaging.prompts")
        await self.apply(self.configs())

    async def stop(self) -> None:
        self.running = False
        if self._decided_sub is not None:
            self.bus.unsubscribe(self._decided_sub)
            self._decided_sub = None
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
            # the secrets' values are part of the key: a bridge stopped by a rejected token restarts on the
            # reload after its variable or credential file was fixed (and only then)
            key = (self.section.enabled, cfg, self.section.retries,
                   tuple(secret_of(self.env, v) for k, v in msgspec.structs.asdict(cfg).items() if k.endswith("_env")))
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
                courier = self.couriers[name] = Courier(bridge, lambda: self.store, self._refused(name))
                courier.start()
                self._subs[name] = self.bus.subscribe("*", self._deliverer(bridge), name=f"messaging.{name}",
                                                      retries=self.section.retries)

    async def _drop(self, name: str) -> None:
        sub = self._subs.pop(name, None)
        if sub is not None:
            self.bus.unsubscribe(sub)
        courier = self.couriers.pop(name, None)
        if courier is not None:
            await courier.stop()  # what it holds stays in the outbox for the next courier
        bridge = self.bridges.pop(name, None)
        if bridge is not None:
            try:
                await bridge.stop()
            except Exception:
                log.exception("messaging: stopping the %s bridge failed", name)

    # -- status ----------------------------------------------------------------------------------------
    def bridge_states(self) -> dict[str, dict[str, Any]]:
        out = {n: b.state.as_dict() for n, b in self.bridges.items()}
        if self.store is not None:
            for n, st in out.items():
                if st["enabled"]:
                    st["outbox"] = self.store.outbox_state(n)
        return out

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
            if self._channel_refused(event.project, bridge, target, event):  # a project's rule picked the channel
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
            if root is not None and self._channel_refused(root, bridge, target, event):  # its own subscription
                return []
            return [(event_message(event, sub.severity), target)]
        return []

    def _channel_refused(self, project: str | None, bridge: str, target: str | None, event: Event) -> bool:
        gate = getattr(self.ports, "channel_refused", None)
        return gate is not None and gate(project, f"{bridge}:{target}" if target else bridge, event.id) is not None

    def _deliverer(self, bridge: Bridge) -> Callable[[Event], Any]:
        def deliver(event: Event) -> None:
            for msg, target in self.route(event, bridge.name):
                if target is None and not bridge.has_default_target():
                    continue
                self.post(bridge, msg, target, msgspec.json.encode(event).decode())

        return deliver

    def post(self, bridge: Bridge, msg: OutMessage, target: str | None, event: str | None = None) -> None:
        """Queue a message in the bridge's outbox (durably, before any attempt) and wake its courier."""
        if self.store is None:
            return
        _oid, dropped = self.store.put(bridge.name, target, message_record(msg), event, self.section.outbox_max)
        if dropped:
            log.warning("messaging: %s outbox is full (%d): dropped its %d oldest message(s)", bridge.name,
                        self.section.outbox_max, dropped)
        courier = self.couriers.get(bridge.name)
        if courier is not None:
            courier.kick()

    def back(self, bridge: Bridge) -> None:
        """A bridge is connected again: what waits in its outbox goes now, not after the courier's backoff."""
        courier = self.couriers.get(bridge.name)
        if courier is not None:
            courier.kick()

    def _on_approval(self, event: Event) -> None:
        """An approval was decided (from any chat, the CLI, a rule's expiry): every prompt for it, on every
        bridge, shows the outcome and loses its buttons, so nobody presses a stale one."""
        state = event.type.rpartition(".")[2]
        if state not in ("approved", "rejected", "expired") or self.store is None:
            return
        aid = str(event.data.get("approval_id") or event.data.get("id") or "")
        who = event.data.get("decided_by")
        outcome = f"{state}" + (f" by {who}" if who and state != "expired" else "")
        for name, ref, rec in self.store.prompts(aid):
            bridge = self.bridges.get(name)
            if bridge is not None:
                self._spawn(self._close_prompt(bridge, aid, ref, rec, outcome))

    async def _close_prompt(self, bridge: Bridge, aid: str, ref: str, rec: dict[str, Any], outcome: str) -> None:
        try:
            await bridge.close_prompt(ref, message_of(rec), outcome)
        except Exception as exc:
            log.warning("messaging: %s could not update the prompt of approval %s: %s", bridge.name, aid, exc)
            return
        if self.store is not None:
            self.store.prompt_closed(bridge.name, aid, ref)

    def _refused(self, name: str) -> Callable[[str | None, str], None]:
        def refused(event: str | None, error: str) -> None:
            if event is None:
                return
            try:
                ev = msgspec.json.decode(event, type=Event)
            except msgspec.DecodeError:
                return
            self.bus.dead_letter(ev, f"messaging.{name}", error, 1)

        return refused

    async def rpc_notify(self, params: Any, _conn: Any) -> dict[str, Any]:
        if params.channel:  # a typo must not quietly go to every bridge
            name = params.channel.partition(":")[0]
            if name not in BRIDGES:
                raise RpcError(INVALID_PARAMS, f"channel {params.channel!r} names no bridge (one of "
                                               f"{', '.join(BRIDGES)}, optionally :target)",
                               {"param": "channel"})
            bridge = self.bridges.get(name)
            if bridge is None or not bridge.state.enabled:
                why = bridge.state.detail if bridge is not None else "not configured"
                raise RpcError(INVALID_PARAMS, f"the {name} bridge is not enabled ({why})", {"param": "channel"})
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
        for key, state, rec, task_id in self.store.pending(bridge.name):
            inbound = Inbound(rec["platform"], rec["user_id"], rec["chat_id"], rec["text"], key, rec.get("display", ""))
            if state == "received":
                log.info("messaging: running %s command %s received before a restart", bridge.name, key)
                self._spawn_command(bridge, inbound)
            elif task_id:  # an /ask whose turn outlived the service (re-adopted): its answer is still owed
                log.info("messaging: %s command %s: following its turn %s after a restart", bridge.name, key, task_id)
                self._spawn(self._resume(bridge, inbound, task_id), f"{bridge.name} answer of {task_id}")
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

    def command_of(self, text: str, addressed: bool) -> str | None:
        """The command a message means, the same rule for every bridge (``commands.as_command``);
        ``addressed``: a private chat, or a message that mentions the bot."""
        cmd = as_command(text, private=addressed, plain_ask=self.section.plain_messages_ask)
        if cmd is None and addressed and text.strip():
            log.info("messaging: ignored a plain message (messaging.plain_messages_ask is off): %.60r", text)
        return cmd

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
            elif inbound.private_reply is not None:  # told already; a press or interaction still gets an answer
                with contextlib.suppress(Exception):
                    await inbound.private_reply(OutMessage("Refused (see the earlier message).", reply=True,
                                                           private=True))
            return
        store.mark(bridge.name, inbound.key, "started")
        inbound.on_task = lambda task_id: store.set_task(bridge.name, inbound.key, task_id)
        await self.runner.run(inbound, reply)
        with contextlib.suppress(Exception):  # the store closes on stop; the reply went out already
            store.mark(bridge.name, inbound.key, "done")

    async def _resume(self, bridge: Bridge, inbound: Inbound, task_id: str) -> None:
        store = self.store
        assert store is not None

        async def reply(msg: OutMessage) -> None:
            await self._reply(bridge, inbound, msg)

        await self.runner.resume_ask(inbound, task_id, reply)
        with contextlib.suppress(Exception):
            store.mark(bridge.name, inbound.key, "done")

    async def _reply(self, bridge: Bridge, inbound: Inbound, msg: OutMessage) -> None:
        """An answer goes through the platform's fast path if it has one, else (or if that fails: an
        expired interaction token) into the outbox, to the chat that asked. A private answer (a refusal)
        goes only to the one who acted where the platform can."""
        if msg.private and inbound.private_reply is not None:
            try:
                await inbound.private_reply(msg)
                return
            except Exception as exc:
                log.warning("messaging: could not answer %s privately on %s (%s); answering in the chat",
                            inbound.user_key, bridge.name, exc)
        elif inbound.responder is not None:
            try:
                await inbound.responder(msg)
                return
            except Exception as exc:
                bridge.state.error(f"reply failed: {exc}")
                log.warning("messaging: could not answer %s on %s directly (%s); posting to the chat",
                            inbound.user_key, bridge.name, exc)
        self.post(bridge, msg, inbound.chat_id)
