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


class Host(Protocol):
    """The hub as a bridge sees it."""

    store: MessagingStore

    def receive(self, bridge: Bridge, inbound: Inbound, offset: int | None = None) -> bool: ...

    def ready(self, bridge: Bridge) -> None: ...


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
        """The value of an ``*_env`` variable, else of the systemd credential of that name; empty if neither."""
        value = (self.env.get(env_name) or "").strip()
        creds = self.env.get("CREDENTIALS_DIRECTORY")
        if not value and creds:
            try:
                value = (Path(creds) / env_name).read_text().strip()
            except (OSError, UnicodeDecodeError):
                value = ""
        return value

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

    async def send(self, msg: OutMessage, target: str | None = None) -> None:
        """Deliver one message (to ``target``, else the configured default); raise SendError on failure."""
        raise NotImplementedError

    def has_default_target(self) -> bool:
        return True
