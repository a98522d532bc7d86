"""What every bridge shares: its state, jittered reconnect backoff, and the host it reports to."""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..owned import OwnedTasks
from .model import BridgeState, Inbound, OutMessage
from .store import MessagingStore

log = logging.getLogger("aiwg.messaging")


class Backoff:
    """Exponential backoff with jitter (half fixed, half random), so many clients never reconnect in step."""

    def __init__(self, base: float = 1.0, cap: float = 60.0) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0

    def next(self) -> float:
        d = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return d / 2 + random.uniform(0, d / 2)

    def reset(self) -> None:
        self.attempt = 0


#: while a platform's server cannot be reached at all (refused, reset, DNS), retry at least this often, so
#: inbound polling is back within 2 s of the server's return; errors the server answers back off to 60 s
UNREACHABLE_CAP_S = 2.0


def secret_of(env: Mapping[str, str], env_name: str) -> str:
    """The value of an ``*_env`` variable, else of the systemd credential of that name; empty if neither.
    Read afresh each time: ``aiwgctl reload`` after fixing a credential file restarts the bridge."""
    value = (env.get(env_name) or "").strip()
    creds = env.get("CREDENTIALS_DIRECTORY")
    if not value and creds:
        try:
            value = (Path(creds) / env_name).read_text().strip()
        except (OSError, UnicodeDecodeError):
            value = ""
    return value


class Host(Protocol):
    """The hub as a bridge sees it."""

    store: MessagingStore

    def receive(self, bridge: Bridge, inbound: Inbound, offset: int | None = None) -> bool: ...

    def ready(self, bridge: Bridge) -> None: ...

    def back(self, bridge: Bridge) -> None: ...

    def command_of(self, text: str, addressed: bool) -> str | None: ...


class Bridge:
    """One platform. ``start`` never raises: a bridge that cannot run says why in its state."""

    name = "bridge"

    def __init__(self, cfg: Any, env: Mapping[str, str], host: Host, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.cfg = cfg
        self.env = env
        self.host = host
        self.state = BridgeState(self.name)
        self.backoff = Backoff()
        self._tasks = OwnedTasks(f"messaging.{self.name}", log)

    def secret(self, env_name: str) -> str:
        return secret_of(self.env, env_name)

    def retry_delay(self, unreachable: bool) -> float:
        """The next reconnect delay: jittered, capped at 60 s, and at 2 s while the server is unreachable."""
        d = self.backoff.next()
        return min(d, UNREACHABLE_CAP_S) if unreachable else d

    def connected(self, detail: str) -> None:
        """The platform answered: connected (again). The first time, the hub finishes an earlier run's
        commands; every time after a loss, the courier sends what waited."""
        self.backoff.reset()
        if self.state.state == "connected" and self.state.detail == detail:
            return
        self.state.state, self.state.detail = "connected", detail
        self.host.ready(self)
        self.host.back(self)

    def disable(self, why: str) -> None:
        self.state.enabled = False
        self.state.state = "disabled"
        self.state.detail = why
        log.info("messaging: %s bridge disabled: %s", self.name, why)

    @staticmethod
    async def load(*modules: str) -> None:
        """Import heavy client libraries (discord.py: ~0.7 s) in a thread, so the event loop keeps serving."""
        for m in modules:
            await asyncio.to_thread(importlib.import_module, m)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str = "a background task") -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, what)

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        await self._tasks.close()
        if self.state.enabled:
            self.state.state = "stopped"

    async def send(self, msg: OutMessage, target: str | None = None) -> str | None:
        """Deliver one message (to ``target``, else the configured default); raise SendError on failure.
        Returns the platform's reference to the message (to edit it later), where it has one."""
        raise NotImplementedError

    async def close_prompt(self, ref: str, msg: OutMessage, outcome: str) -> None:
        """An approval prompt (sent as ``msg``, known as ``ref``) was decided: show the outcome below its
        text and take its buttons away. Bridges that cannot edit messages do nothing."""

    def has_default_target(self) -> bool:
        return True
