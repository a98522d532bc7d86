"""Background tasks that always have an owner: kept, their failures logged with context, ended on stop.

``asyncio.ensure_future`` alone leaves a task nobody holds: the loop may collect it mid-run, its exception
surfaces only as "Task exception was never retrieved", and stop cannot wait for it. Each subsystem that
starts work in the background keeps it in one of these instead, and closes it in its ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("aiwg.owned")


class OwnedTasks:
    """The tasks one owner (a subsystem, the core) started and has not seen end yet."""

    def __init__(self, owner: str, logger: logging.Logger | None = None) -> None:
        self.owner = owner
        self.log = logger or log
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, T], what: str,
              on_error: Callable[[BaseException], None] | None = None) -> asyncio.Task[T]:
        """Run ``coro`` in the background; ``what`` names it in logs; ``on_error`` runs if it fails."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}: {what}")
        self.tasks.add(task)

        def done(t: asyncio.Task[T]) -> None:
            self.tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()  # retrieved here, so never "never retrieved"
            if exc is None:
                return
            self.failures += 1
            self.log.error("%s: %s failed: %s", self.owner, what, exc or type(exc).__name__, exc_info=exc)
            if on_error is not None:
                try:
                    on_error(exc)
                except Exception:
                    self.log.exception("%s: handling the failure of %s failed", self.owner, what)

        task.add_done_callback(done)
        return task

    def __len__(self) -> int:
        return len(self.tasks)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for every task (started before or during the wait) to end; False if the timeout came first."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.tasks:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            _, pending = await asyncio.wait(set(self.tasks), timeout=left)
            if pending:  # the timeout came first
                return False
        return True

    async def close(self, grace: float = 0.0) -> None:
        """Let the tasks finish for ``grace`` seconds, then cancel what is left and wait for it to unwind."""
        if grace > 0:
            await self.wait(grace)
        pending = list(self.tasks)
        for t in pending:
            t.cancel()
        if pending:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
