"""An asyncio JSON-RPC connection for the interactive clients (chat REPL, dashboard).

One connection carries requests and the service's notifications: replies resolve futures, and
notifications go to whoever registered for their method.  The stock asyncio loop, on purpose: the
REPL runs prompt_toolkit, which redraws badly under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import protocol as p

__all__ = ["AsyncRpc"]

_LIMIT = p.MAX_LINE + 2


class AsyncRpc:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: str | Path) -> AsyncRpc:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=_LIMIT)
        return cls(reader, writer)

    def on(self, method: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(params)`` for each ``method`` notification; returns the way to stop."""
        self._handlers.setdefault(method, []).append(fn)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.get(method, []).remove(fn)

        return off

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self.closed.is_set():
            raise ConnectionError("the service closed the connection")
        rid = next(self._ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params:
            msg["params"] = {k: v for k, v in params.items() if v is not None}
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.writer.write(json.dumps(msg).encode() + b"\n")
        try:
            await self.writer.drain()
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                rid = msg.get("id")
                if rid is not None and rid in self._pending:
                    fut = self._pending[rid]
                    if fut.done():
                        continue
                    err = msg.get("error")
                    if err is not None:
                        fut.set_exception(p.RpcError(err.get("code", p.INTERNAL_ERROR), err.get("message", "error"),
                                                     err.get("data")))
                    else:
                        fut.set_result(msg.get("result"))
                elif "method" in msg:
                    for fn in list(self._handlers.get(msg["method"], ())):
                        fn(msg.get("params") or {})
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the service closed the connection"))

    async def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
