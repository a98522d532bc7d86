"""An asyncio JSON-RPC connection for the interactive clients (chat REPL, ``top``, the dashboard panes).

One connection carries requests and the service's notifications: replies resolve futures, and
notifications go to whoever registered for their method.  ``Link`` keeps such a connection across the
service's restarts (a ``kill -9``, an upgrade): it reconnects with a short capped backoff, says so through
one status callback, and runs the client's re-attach steps (subscribe again, follow a turn again) before
calls go on.  The stock asyncio loop, on purpose: the REPL runs prompt_toolkit, which redraws badly under
uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .. import protocol as p
from ..client import Impostor, NotRunning, check_socket_dir, peer_uid

__all__ = ["AsyncRpc", "Link"]

log = logging.getLogger("aiwg.cli")
Handlers = dict[str, list[Callable[[dict[str, Any]], None]]]

_LIMIT = p.MAX_LINE + 2


class AsyncRpc:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handlers: Handlers | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handlers: Handlers = handlers if handlers is not None else {}
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: str | Path, handlers: Handlers | None = None) -> AsyncRpc:
        """Connect, refusing a socket another user could have planted or serves (as ``client.Client``)."""
        check_socket_dir(str(path))
        reader, writer = await asyncio.open_unix_connection(str(path), limit=_LIMIT)
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else os.getuid()
        if uid != os.getuid():
            writer.close()
            raise Impostor(str(path), f"it is served by uid {uid}, not by you (uid {os.getuid()})")
        return cls(reader, writer, handlers)

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
                        try:
                            fn(msg.get("params") or {})
                        except Exception:  # one handler's bug must not stop the replies for everyone
                            log.exception("a handler of %s failed", msg["method"])
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


class Link:
    """A connection to the service that comes back by itself.

    ``call`` waits while the service is away and goes on once it answers again; a call whose connection
    dropped before the reply raises ``ConnectionError`` when ``resend`` is false (the caller decides whether
    it may have been carried out), else it is sent again on the new connection (read-only calls).  On each
    new connection the ``on_up`` steps run first, in order.  ``status`` is told ``"down"``/``"up"`` with
    the seconds since the loss: one line for the client to show, never a stream.
    """

    #: first retry after 50 ms, doubling to this cap, with jitter: < 1 s from the service's return
    CAP_S = 0.5
    PING_TIMEOUT_S = 30.0

    def __init__(self, path: str | Path, status: Callable[[str, float], None] | None = None) -> None:
        self.path = str(path)
        self.status = status or (lambda _state, _s: None)
        self.rpc: AsyncRpc | None = None
        self.up = asyncio.Event()
        self.generation = 0  # connections made so far
        self.down_since: float | None = None
        self._handlers: Handlers = {}
        self._on_up: list[Callable[[AsyncRpc], Awaitable[None]]] = []
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, status: Callable[[str, float], None] | None = None) -> Link:
        """The first connection must succeed (a service that was never there is an error, not a wait)."""
        link = cls(path, status)
        link._attach(await AsyncRpc.connect(link.path, link._handlers))
        link._keeper = asyncio.get_running_loop().create_task(link._keep())
        return link

    def on(self, method: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(params)`` for each ``method`` notification, on this connection and every later one."""
        self._handlers.setdefault(method, []).append(fn)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.get(method, []).remove(fn)

        return off

    def on_up(self, fn: Callable[[AsyncRpc], Awaitable[None]]) -> None:
        """Run ``fn(rpc)`` on each new connection (after a loss), before waiting calls go on."""
        self._on_up.append(fn)

    def _attach(self, rpc: AsyncRpc) -> None:
        self.rpc = rpc
        self.generation += 1
        self.up.set()

    async def current(self) -> AsyncRpc:
        """The live connection, waiting for one while the service is away."""
        while True:
            await self.up.wait()
            if self.rpc is not None and not self.rpc.closed.is_set():
                return self.rpc
            await asyncio.sleep(0)  # the keeper is about to clear ``up``

    async def call(self, method: str, params: dict[str, Any] | None = None, *, resend: bool = True) -> Any:
        while True:
            rpc = await self.current()
            try:
                return await rpc.call(method, params)
            except ConnectionError:
                if not resend:
                    raise
                await rpc.closed.wait()

    async def _connect_again(self) -> AsyncRpc:
        delay = 0.05
        while True:
            try:
                rpc = await AsyncRpc.connect(self.path, self._handlers)
            except Impostor:
                raise
            except (OSError, NotRunning):
                rpc = None
            if rpc is not None:
                try:
                    # a socket-activated service accepts before it is ready: it is back when it answers
                    await asyncio.wait_for(rpc.call("ping"), self.PING_TIMEOUT_S)
                    return rpc
                except (ConnectionError, TimeoutError, p.RpcError):
                    await rpc.close()
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
            delay = min(self.CAP_S, delay * 2)

    async def _keep(self) -> None:
        while not self._closed:
            assert self.rpc is not None
            await self.rpc.closed.wait()
            if self._closed:
                return
            self.up.clear()
            await self.rpc.close()
            self.down_since = time.monotonic()
            self.status("down", 0.0)
            rpc = await self._connect_again()
            for fn in list(self._on_up):
                with contextlib.suppress(ConnectionError, p.RpcError):
                    await fn(rpc)
            gone = time.monotonic() - self.down_since
            self.down_since = None
            self._attach(rpc)
            self.status("up", gone)

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self.rpc is not None:
            await self.rpc.close()

