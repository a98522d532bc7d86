"""The contract between the core and its subsystems, and the narrow ports a subsystem is built from.

A subsystem gets what it uses (the bus, the RPC server to register on, a read-only view of the current
configs, the state directory, the task queue's submit function) and never the ``Service``: it cannot reach
into the core, and a test can build it from plain parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .config import Configs

#: The current configs, read at each use: a reload swaps them whole, so never keep a copy.
ConfigsView = Callable[[], Configs]


class Subsystem(Protocol):
    """What every subsystem offers the core. ``apply`` (optional) runs after start and on every reload."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class SubmitTask(Protocol):
    """The task queue's way in, for subsystems that queue agent work (rules, chat, bridges)."""

    def __call__(self, project: str, prompt: str, agent: str | None, priority: int, source: str,
                 timeout_s: float | None, origin: dict[str, Any]) -> str: ...


class Placeholder:
    """A subsystem slot that a later part fills; it keeps the start/stop order honest meanwhile."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def health(self) -> dict[str, Any]:
        return {"state": "not built yet"}
