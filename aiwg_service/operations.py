"""Changes to the service (reload, project add/remove, trust, stop) run one at a time, owned by the service.

A change runs in a task the service keeps, not in the RPC handler that asked for it: a client that hangs
up (Ctrl-C, aiwgctl's timeout) cancels only its wait for the reply, never a reload half-way through. The
lock is FIFO, so changes happen in the order they arrived; once stop is queued, later changes are refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .owned import OwnedTasks

T = TypeVar("T")

log = logging.getLogger("aiwg.service")


class Stopping(RuntimeError):
    """The service is stopping: the change was not made."""


class Operations:
    """The service's queue of changes."""

    def __init__(self) -> None:
        self.tasks = OwnedTasks("service")
        self._lock = asyncio.Lock()
        self.current: str | None = None
        self.stopping = False
        self.done = 0

    async def run(self, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` after the changes queued before it; the caller may go away, the change still ends."""
        if self.stopping:
            raise Stopping(f"{name} refused: the service is stopping")
        state: dict[str, bool] = {"waiting": True}
        task = self.tasks.spawn(self._serial(name, fn, state), name)
        try:
            ok, value = await asyncio.shield(task)
        except asyncio.CancelledError:
            state["waiting"] = False  # the change goes on; only its reply is lost
            raise
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    async def _serial(self, name: str, fn: Callable[[], Awaitable[Any]], state: dict[str, bool]
                      ) -> tuple[bool, Any]:
        async with self._lock:
            if self.stopping and name != "stop":
                return False, Stopping(f"{name} refused: the service is stopping")
            self.current = name
            try:
                return True, await fn()
            except Exception as exc:
                # the caller gets it as its reply; with nobody waiting, the log is the only place left
                if not state["waiting"]:
                    log.error("%s failed (its caller had gone): %s", name, exc)
                return False, exc
            finally:
                self.current = None
                self.done += 1

    async def stop(self, fn: Callable[[], Awaitable[T]]) -> T:
        """The last change: after the ones already queued; any change asked for later is refused."""
        self.stopping = True
        state = {"waiting": True}
        ok, value = await self.tasks.spawn(self._serial("stop", fn, state), "stop")
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]
