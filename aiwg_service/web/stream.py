"""Server-Sent Events off the bus and the task logs: what keeps a page live without polling.

Each stream is one ``LocalConn`` on the service's own streaming methods (``events.subscribe``,
``task.logs {follow}``): a notification becomes an SSE frame in a bounded queue; a browser that stops
reading has frames dropped (and is told of the gap), never buffered without bound. An idle stream wakes
only for its heartbeat (a comment line every ``HEARTBEAT`` seconds, which also finds browsers that left).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .. import protocol as p
from .local import STREAM_BUDGET, LocalConn, LocalRpc
from .loglines import Lines

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("aiwg.web")

HEARTBEAT = 30.0
NOTIFY_GAP = getattr(p, "NOTIFY_GAP", "events.gap")
TASK_FINAL = frozenset({"task.completed", "task.failed", "task.timeout", "task.cancelled", "task.interrupted"})


def frame(event: str, data: Any, ident: str | None = None) -> bytes:
    """One SSE message; the JSON never holds a raw newline, so one ``data:`` line carries it."""
    out = f"event: {event}\n"
    if ident is not None:
        out += f"id: {ident}\n"
    return (out + "data: " + msgspec.json.encode(data).decode() + "\n\n").encode()


class Stream:
    """One browser's live stream."""

    def __init__(self, rpc: LocalRpc, streams: set[Stream], raw: bool = False) -> None:
        self.rpc = rpc
        #: raw: a task's log bytes as written (``output`` frames); else readable complete lines (``lines``)
        self.raw = raw
        self.lines: dict[str, Lines] = {}
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.streams = streams
        self.closing = False
        self.on_notify: Callable[[str, Any], None] = self.push_notification
        self.conn: LocalConn = rpc.conn(sink=lambda m, prm: self.on_notify(m, prm),
                                        room=lambda: len(self.queue) < STREAM_BUDGET)

    # -- producing ----------------------------------------------------------------------------------
    def push(self, data: bytes) -> None:
        if len(self.queue) >= STREAM_BUDGET:
            self.dropped += 1
            return
        if self.dropped:
            self.queue.append(frame("gap", {"dropped": self.dropped}))
            self.dropped = 0
        self.queue.append(data)
        self.wake.set()

    def push_notification(self, method: str, params: Any) -> None:
        params = msgspec.to_builtins(params)
        if method == p.NOTIFY_EVENT:
            self.push(frame("event", params, event_cursor(params)))
        elif method == p.NOTIFY_TASK_OUTPUT:
            self.output(params)
        elif method == NOTIFY_GAP:  # the bus could not keep what this stream missed
            self.push(frame("gap", {"dropped": params.get("lost") if isinstance(params, dict) else None}))

    def output(self, msg: dict[str, Any]) -> None:
        tid = str(msg.get("taskId"))
        if self.raw:
            self.push(frame("output", msg))
        else:
            end = int(msg.get("offset", 0))
            lines = self.lines.get(tid)
            if lines is None:
                lines = self.lines[tid] = Lines(end - len(str(msg.get("data", "")).encode()))
            shown = lines.feed(str(msg.get("data", "")), end)
            if msg.get("done"):
                shown += lines.flush(end)
            if shown:
                self.push(frame("lines", {"taskId": tid, "lines": shown}))
        if msg.get("done"):
            self.lines.pop(tid, None)
            self.push(frame("done", {"taskId": tid, "state": msg.get("state")}))

    async def follow(self, task_id: str, offset: int | None) -> None:
        """Send ``task_id``'s log from ``offset`` (None: its last 16 KiB), then follow it while it runs."""
        from .pages import TAIL

        try:
            if offset is None:
                head = await self.rpc.call("task.logs", {"taskId": task_id, "offset": 0, "limit": 1})
                offset = max(0, int(head.get("size", 0)) - TAIL)
            res = await self.rpc.call("task.logs", {"taskId": task_id, "offset": offset, "limit": TAIL,
                                                    "follow": True}, self.conn)
        except p.RpcError as exc:
            log.debug("web: cannot follow %s: %s", task_id, exc.message)
            return
        self.lines[task_id] = Lines(offset)
        if res.get("data"):
            self.output({"taskId": task_id, "data": res["data"], "offset": res["offset"]})

    async def subscribe(self, type_: str, project: str | None = None, since: int | None = None) -> None:
        params: dict[str, Any] = {"type": type_}
        if project:
            params["project"] = project
        if since is not None:
            params["since"] = since  # a bus that numbers its events resumes the subscription itself
        await self.rpc.call("events.subscribe", params, self.conn)

    # -- serving --------------------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        self.streams.add(self)
        try:
            await resp.write(b"retry: 2000\n\n")
            while not self.closing:
                if not self.queue:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), HEARTBEAT)
                    if not self.queue and not self.closing:
                        await resp.write(b": heartbeat\n\n")
                        continue
                while self.queue:
                    await resp.write(self.queue.popleft())
                self.conn.drained()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(self)
            self.conn.close()
        return resp

    def close(self) -> None:
        self.closing = True
        self.wake.set()


def event_cursor(ev: dict[str, Any]) -> str | None:
    """An event's place for resuming: its bus sequence number when the bus gives one, else its id."""
    seq = ev.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        return str(seq)
    return ev.get("id") if isinstance(ev.get("id"), str) else None


async def backlog(rpc: LocalRpc, since: str, type_: str | None, project: str | None) -> list[dict[str, Any]]:
    """Events after ``since`` (a sequence number or an event id), for a stream resuming after a reload.

    A sequence number goes to ``events.query {since}`` where the bus offers it, else to ``events.list``; an
    event id to ``events.list``. Whatever the service cannot answer yields nothing (the page says so)."""
    base: dict[str, Any] = {"limit": 1000}
    if type_:
        base["type"] = type_
    if project:
        base["project"] = project
    attempts: list[tuple[str, dict[str, Any]]] = []
    if since.isdigit():
        if "events.query" in rpc.server.handlers:
            attempts.append(("events.query", {**base, "since": int(since)}))
        attempts.append(("events.list", {**base, "since": int(since)}))
    else:
        attempts.append(("events.list", {**base, "since": since}))
    for method, params in attempts:
        try:
            res = await rpc.call(method, params)
        except (p.RpcError, KeyError):
            continue
        evs = res.get("events", []) if isinstance(res, dict) else res
        return [e for e in evs if isinstance(e, dict)]
    return []
