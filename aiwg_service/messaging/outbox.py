"""A bridge's courier: it sends what the bridge's outbox holds, oldest first, one message at a time.

A message leaves the outbox only when the platform acknowledged it (the bridge's ``send`` returned), or
refused it for good (a 403, an unknown chat: then it goes to the bus's dead-letter queue). Anything else
(the server is away, a 5xx, a 429) keeps it at the head and the courier waits: ``Retry-After`` when the
platform gives one, else a capped jittered backoff, cut short when the bridge says it is connected again.
One at a time is what keeps the order across retries. Idle, the courier waits on an event: no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from .bridge import Backoff, Bridge
from .model import Button, OutMessage, SendError
from .store import MessagingStore

log = logging.getLogger("aiwg.messaging")

#: the longest wait between two attempts while a platform is away (a reconnect wakes the courier sooner)
RETRY_CAP_S = 10.0


def message_record(msg: OutMessage) -> dict[str, Any]:
    return asdict(msg)


def message_of(rec: dict[str, Any]) -> OutMessage:
    buttons = [Button(str(b["label"]), b["action"], str(b["value"])) for b in rec.get("buttons") or []]
    return OutMessage(str(rec.get("text", "")), rec.get("title"), rec.get("severity", "info"), buttons,
                      bool(rec.get("reply")), bool(rec.get("private")))


class Courier:
    def __init__(self, bridge: Bridge, store: Callable[[], MessagingStore | None],
                 refused: Callable[[str | None, str], None]) -> None:
        """``refused(event_json, error)``: the platform refused a message for good."""
        self.bridge = bridge
        self.store = store
        self.refused = refused
        self.wake = asyncio.Event()
        self.backoff = Backoff(base=0.5, cap=RETRY_CAP_S)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"courier.{self.bridge.name}")

    def kick(self) -> None:
        """Something was queued, or the bridge is connected again: try now."""
        self.wake.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    async def _run(self) -> None:
        name = self.bridge.name
        while True:
            store = self.store()
            head = store.head(name) if store is not None else None
            if head is None:
                self.wake.clear()
                store = self.store()
                if store is None or store.head(name) is None:
                    await self.wake.wait()
                continue
            if self.bridge.state.state == "error":  # stopped (a rejected token): keep everything until a reload
                self.wake.clear()
                await self.wake.wait()
                continue
            oid, target, rec, _attempts, event = head
            try:
                ref = await self.bridge.send(message_of(rec), target)
            except asyncio.CancelledError:
                raise
            except SendError as exc:
                self.bridge.state.send_failures += 1
                self.bridge.state.error(str(exc))
                if exc.permanent:
                    log.error("messaging: %s refused a message for good: %s (not retried)", name, exc)
                    store.sent(oid)
                    self.refused(event, f"SendError: {exc}")
                    continue
                store.attempt_failed(oid, str(exc))
                delay = float(exc.retry_after) if exc.retry_after else self.backoff.next()
                log.info("messaging: %s could not send (%s); next attempt in %.1f s, %d waiting", name, exc,
                         delay, store.outbox_state(name)["queued"])
                await self._sleep(min(delay, 300.0))
                continue
            except Exception as exc:  # a bridge's bug: keep the message, try again later
                log.exception("messaging: %s failed to send", name)
                store.attempt_failed(oid, f"{type(exc).__name__}: {exc}")
                await self._sleep(self.backoff.next())
                continue
            store.sent(oid)
            self.backoff.reset()
            if ref and rec.get("buttons"):  # an approval prompt: remembered, so any decision updates it
                store.prompt_sent(name, str(rec["buttons"][0]["value"]), ref, rec)
