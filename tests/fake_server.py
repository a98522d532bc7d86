"""Run an aiohttp app on 127.0.0.1 (a free port) in a background thread, for the chat-platform fakes.

The service under test runs in its own process and reaches the fake over real TCP; the test thread talks to
the fake through thread-safe helpers (``call`` runs a coroutine on the fake's loop, ``wait`` polls state).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class ThreadedServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.lock = threading.RLock()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=type(self).__name__)

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # -- outages: the port stops answering (connects are refused) and open connections are cut -----------
    def down(self) -> None:
        self.call(self._down())

    async def _down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def up(self) -> None:
        """Back on the same port, as a server is after an outage."""
        self.call(self._start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon_threadsafe(fn)

    async def _shutdown(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runner.cleanup(), 5)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self._shutdown(), timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def wait(self, pred: Callable[[], T], timeout: float = 40.0, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"fake {type(self).__name__}: timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
