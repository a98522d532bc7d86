"""Calling the service's own RPC methods in-process: the dashboard asks what ``aiwgctl`` asks, the same way.

The dashboard has no second copy of any query or action: a page is the result of ``task.list``,
``approval.list``, ``budget.status``, ``trace.get``..., decoded and validated by ``protocol`` exactly as
on the socket. Streaming methods (``events.subscribe``, ``task.logs {follow}``) push their notifications to
a ``LocalConn``, whose sink is a page's Server-Sent Events stream; it is bounded like a socket connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .. import protocol as p

log = logging.getLogger("aiwg.web")

#: notifications a stream may hold before it counts as full (the browser is not reading)
STREAM_BUDGET = 2000


class LocalConn:
    """What a streaming handler needs of a connection: notify, room, close callbacks. The peer is the owner
    (the browser proved it with its session); ``peer_pid`` is None: no process of ours is on the other end."""

    def __init__(self, server: Any, sink: Callable[[str, Any], None], room: Callable[[], bool] = lambda: True
                 ) -> None:
        self.server = server
        self.sink = sink
        self.room = room
        self.peer_uid = os.getuid()
        self.peer_pid: int | None = None
        #: how a decision made here arrived (``approval.approve`` records it as ``via``)
        self.channel = "web"
        self.streams = 0
        self.closed = False
        self._close_callbacks: list[Callable[[], None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def notify(self, method: str, params: Any) -> None:
        if not self.closed:
            self.sink(method, params)

    def send(self, frame: bytes) -> None:
        """A notification already encoded as a wire frame (a bus follower sends events this way)."""
        if self.closed:
            return
        msg = msgspec.json.decode(frame)
        if isinstance(msg, dict) and isinstance(msg.get("method"), str):
            self.sink(msg["method"], msg.get("params"))

    @property
    def writable(self) -> bool:
        return not self.closed and self.room()

    def when_writable(self, cb: Callable[[], None]) -> None:
        if self.writable:
            asyncio.get_running_loop().call_soon(cb)
        else:
            self._drain_callbacks.append(cb)

    def drained(self) -> None:
        """The stream's reader caught up: run what waited for room."""
        cbs, self._drain_callbacks = self._drain_callbacks, []
        for cb in cbs:
            cb()

    @property
    def is_closing(self) -> bool:
        return self.closed

    def on_close(self, cb: Callable[[], None]) -> None:
        self._close_callbacks.append(cb)

    def open_stream(self) -> None:
        self.streams += 1

    def close_stream(self) -> None:
        self.streams = max(0, self.streams - 1)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for cb in self._close_callbacks:
            try:
                cb()
            except Exception:
                log.exception("web: a stream's close callback failed")
        self._close_callbacks.clear()
        self._drain_callbacks.clear()
        for t in self._tasks:
            t.cancel()


class LocalRpc:
    """``await call(method, params)``: one RPC method run in-process, its result as plain JSON types."""

    def __init__(self, server: Any) -> None:
        #: the RpcServer: its ``handlers`` and ``accepting`` (nothing else is touched)
        self.server = server

    def conn(self, sink: Callable[[str, Any], None] = lambda _m, _p: None,
             room: Callable[[], bool] = lambda: True) -> LocalConn:
        return LocalConn(self.server, sink, room)

    async def call(self, method: str, params: Mapping[str, Any] | None = None, conn: LocalConn | None = None
                   ) -> Any:
        entry = self.server.handlers.get(method)
        if entry is None:
            raise p.RpcError(p.METHOD_NOT_FOUND, f"Method not available: {method}")
        decoded = p.decode_params(method, msgspec.Raw(msgspec.json.encode(dict(params or {}))))
        if not self.server.accepting and method not in p.READ_ONLY:
            raise p.RpcError(p.SERVER_BUSY, "the service is stopping and takes no new work")
        res = entry.fn(decoded, conn if conn is not None else self.conn())
        if inspect.isawaitable(res):
            res = await res
        # through JSON, as on the wire: results may hold Structs or pre-encoded ``msgspec.Raw`` parts
        return msgspec.json.decode(msgspec.json.encode(res))
