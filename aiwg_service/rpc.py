"""The JSON-RPC 2.0 server on a Unix stream socket (inherited from systemd, or bound by us).

Built on asyncio's Protocol API rather than streams: a synchronous handler (``ping``, ``daemon.status``)
is answered straight from ``data_received`` with no task created, which is what keeps a round trip in the
tens of microseconds. Coroutine handlers run as tasks, so a slow one never holds up the connection, and
each connection is independent, so a client that stalls or sends garbage never blocks another.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from . import looplag, memtrim, paths, safefs
from . import protocol as p

log = logging.getLogger("aiwg.rpc")

Handler = Callable[[Any, "Connection"], Any]
PEER_REFUSED = -32003

#: Replies and notifications waiting for one client to read them. Past this the connection stops being
#: read (no new requests run), subscriptions drop events (counted) and log followers wait; below
#: ``OUTPUT_LOW`` everything resumes. So a client that never reads costs at most this, plus one reply.
OUTPUT_BUDGET = 1024 * 1024
OUTPUT_LOW = 256 * 1024
#: Coroutine handlers running at once for one connection (each holds a reply to come).
MAX_INFLIGHT = 128
#: ``events.subscribe`` and ``task.logs {follow}`` streams one connection may hold.
MAX_STREAMS = 64
#: A request line must be complete this long after its first byte, or the connection is closed.
PARTIAL_LINE_TIMEOUT = 30.0
#: Requests one connection runs in a row before the others get the loop (pipelined clients, batches of lines).
LINES_PER_TURN = 32
TURN_SECONDS = 0.001
#: Batches up to this many items run at once; longer ones in turns (as a task), their reply when done.
BATCH_INLINE = 8
#: Bytes of incomplete request lines held across every connection; past it, connections holding one
#: stop being read until the total falls (their data waits in the kernel, not in our memory).
INPUT_BUDGET = 16 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 256
#: Complete request lines one connection may have waiting (for room for their replies) while still being
#: read; past this it is paused. Reading on is what shows a client's hang-up while its handlers run.
HOLD_BYTES = 256 * 1024
#: JSON's whitespace (RFC 8259): a line of only these is skipped; any other control character is an error.
_JSON_WS = b" \t\r"


class _Throttle:
    """At most ``burst`` log records per key per ``window`` seconds: a client must not flood the journal."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        self._seen: dict[str, list[float]] = {}  # key -> [window start, count]

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] > self.window:
            suppressed = int(entry[1]) - self.burst if entry is not None else 0
            if suppressed > 0:
                log.warning("%d more like %r in the last %.0f s were not logged", suppressed, key, self.window)
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = [now, 1]
            return True
        entry[1] += 1
        return entry[1] <= self.burst


class _Entry:
    __slots__ = ("fn", "is_async")

    def __init__(self, fn: Handler) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)


#: Bytes read from a socket at once. A buffered protocol with one shared buffer, so that a connection
#: paused for the input budget has taken at most this much past it (uvloop's default read is 256 KiB).
READ_SIZE = 64 * 1024
_read_buffer = bytearray(READ_SIZE)
_read_view = memoryview(_read_buffer)


class Connection(asyncio.BufferedProtocol):
    """One client connection: NDJSON in, NDJSON out, within a byte budget each way."""

    def __init__(self, server: RpcServer, project: str | None = None) -> None:
        self.server = server
        #: the project this connection is about: it came in through that project's own socket (its
        #: ``.aiwg/daemon/daemon.sock``), so a request that names no project means this one
        self.project = project
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.peer_pid: int | None = None
        self.peer_uid: int | None = None
        #: who is calling (``policy.identity.Caller``), looked up by the gate on first need, then kept
        self.caller: Any = None
        self.closed = asyncio.get_running_loop().create_future()
        self._close_callbacks: list[Callable[[], None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_full = False  # the transport holds OUTPUT_BUDGET bytes the client has not read
        self._held = False  # complete lines wait in ``buf`` until there is room for their replies
        self._starved = False  # paused for the server-wide input budget
        self._yielding = False  # more lines wait for the next loop turn
        self._big = False  # it held a budget's worth of memory at some point
        self._reading = True
        self._counted = 0  # bytes of ``buf`` counted in server.input_bytes
        self._partial_timer: asyncio.TimerHandle | None = None
        self._lines = 0
        self.streams = 0
        self.batch_turn = asyncio.Lock()  # long batches of this connection run one at a time

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=OUTPUT_BUDGET, low=OUTPUT_LOW)
        sock = transport.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            self.peer_pid, self.peer_uid, _gid = struct.unpack("3i", creds)
        except OSError:
            self.peer_uid = None
        if self.peer_uid != self.server.uid:
            if self.server.throttle.allow("peer-uid"):
                log.warning("refused a connection from uid %s (pid %s): not the service's user",
                            self.peer_uid, self.peer_pid)
            err = p.RpcError(PEER_REFUSED, "permission denied: this service belongs to another user")
            transport.write(p.encode_error(None, err))
            transport.close()
            return
        limit = self.server.max_connections
        if len(self.server.connections) >= limit:
            if self.server.throttle.allow("max-connections"):
                log.warning("refused a connection (pid %s): %d connections open, daemon.max_connections is %d",
                            self.peer_pid, len(self.server.connections), limit)
            err = p.RpcError(p.SERVER_BUSY, f"the service has too many connections open ({limit}, "
                             "daemon.max_connections); close some or raise the limit, then retry",
                             {"max_connections": limit})
            transport.write(p.encode_error(None, err))
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._big:
            memtrim.trim_soon()  # it held megabytes: give the heap pages back once it is gone
        self._release_input(len(self.buf))
        self.buf.clear()
        self.server.starving.pop(self, None)
        if self.server.privileged is self:
            self.server.privileged = None
            self.server.wake_starving()
        if self._partial_timer is not None:
            self._partial_timer.cancel()
            self._partial_timer = None
        if not self.closed.done():
            self.closed.set_result(None)
        for cb in self._close_callbacks:
            try:
                cb()
            except Exception:  # a cleanup hook must not break the others
                log.exception("connection close callback failed")
        self._close_callbacks.clear()
        self._drain_callbacks.clear()
        for t in self._tasks:
            t.cancel()

    def pause_writing(self) -> None:
        # the client is not reading: stop running its requests until it catches up
        self._write_full = True
        self._big = True
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_full = False
        callbacks, self._drain_callbacks = self._drain_callbacks, []
        for cb in callbacks:
            if self.is_closing or self._write_full:
                self._drain_callbacks.append(cb)
                continue
            try:
                cb()
            except Exception:
                log.exception("connection drain callback failed")
        self._process()

    def get_buffer(self, sizehint: int) -> memoryview:
        # one buffer for every connection: each read is copied into ``buf`` before the next one runs
        return _read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.buf += _read_view[:nbytes]
        self._process()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._process()

    # -- the read side ---------------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """No room for more replies: the client must read first (or running handlers must finish)."""
        return self._write_full or len(self._tasks) >= MAX_INFLIGHT

    def _process(self) -> None:
        """Run the complete lines in ``buf`` while there is room for their replies, for at most
        ``LINES_PER_TURN`` lines or ``TURN_SECONDS`` before letting the other connections have the loop."""
        if self._yielding:
            return
        buf = self.buf
        start = 0
        turn = 0
        until = time.perf_counter() + TURN_SECONDS
        while not self.full:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if turn == LINES_PER_TURN or (turn and time.perf_counter() > until):
                self._yielding = True
                asyncio.get_running_loop().call_soon(self._next_turn)
                break
            turn += 1
            line = bytes(buf[start:nl])
            start = nl + 1
            self._lines += 1
            if len(line) > p.MAX_LINE:
                self._too_large()
                return
            if line.strip(_JSON_WS):
                self.server.handle_line(line, self)
            if self.is_closing:
                return
        if start:
            del buf[:start]
        # Lines wait for room (replies to drain, handlers to finish, the next turn): keep reading while the
        # waiting input is small, so that a client hanging up is seen at once (its fd and slot freed then,
        # not when its handlers end); past HOLD_BYTES leave the rest in the kernel.
        self._held = (self.full or self._yielding) and len(buf) >= HOLD_BYTES and buf.find(b"\n") >= 0
        if len(buf) - (buf.rfind(b"\n") + 1) > p.MAX_LINE:
            self._too_large()
            return
        self._account_input()
        if buf and self._partial_timer is None:
            self._partial_timer = asyncio.get_running_loop().call_later(
                self.server.partial_line_timeout, self._partial_timeout, self._lines)
        elif not buf and self._partial_timer is not None:
            self._partial_timer.cancel()
            self._partial_timer = None
        self._set_reading()

    def _next_turn(self) -> None:
        self._yielding = False
        if not self.is_closing:
            self._process()

    def _account_input(self) -> None:
        """Keep the server-wide total of buffered input current. Past the budget, a connection holding
        part of a line stops being read, except one (the first to need it), which may finish its line:
        so memory stays within the budget plus one line, and some connection always makes progress."""
        server = self.server
        size = len(self.buf)
        if size > OUTPUT_LOW:
            self._big = True
        delta = size - self._counted
        if delta < 0:
            self._release_input(-delta)
        elif delta:
            self._counted = size
            server.input_bytes += delta
        if size and server.input_bytes > server.input_budget and server.privileged not in (None, self):
            if not self._starved:
                self._starved = True
                server.starving[self] = None
            return
        if size and server.input_bytes > server.input_budget:
            server.privileged = self
        elif server.privileged is self and not size:
            server.privileged = None
            server.wake_starving()
        if self._starved:
            self._starved = False
            server.starving.pop(self, None)

    def _release_input(self, n: int) -> None:
        n = min(n, self._counted)
        if not n:
            return
        self._counted -= n
        self.server.input_bytes -= n
        if self.server.starving and self.server.input_bytes <= self.server.input_budget // 2:
            self.server.wake_starving(every=True)

    def _set_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        want = not (self._write_full or self._held or self._starved)
        if want != self._reading:
            self._reading = want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    def _partial_timeout(self, lines_then: int) -> None:
        self._partial_timer = None
        if self.is_closing or not self.buf:
            return
        if self._held or self._write_full or self._lines != lines_then:
            # waiting on us (replies to drain), or a new line began since: give it its own time
            self._partial_timer = asyncio.get_running_loop().call_later(
                self.server.partial_line_timeout, self._partial_timeout, self._lines)
            return
        err = p.RpcError(p.INVALID_REQUEST, f"Invalid Request: a request line stayed incomplete for "
                         f"{self.server.partial_line_timeout:g} s; closing the connection")
        self.send(p.encode_error(None, err))
        self._discard_input()
        assert self.transport is not None
        self.transport.close()

    def _discard_input(self) -> None:
        self._release_input(len(self.buf))
        self.buf.clear()

    # -- helpers for handlers --------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def notify(self, method: str, params: Any) -> None:
        """Push a server-to-client notification (used by streaming methods)."""
        self.send(p.encode(p.Notification(method=method, params=params)))

    @property
    def writable(self) -> bool:
        """Room for a notification: streams check this and drop (or defer) what does not fit."""
        return not self._write_full and not self.is_closing

    def when_writable(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` once the client has read enough for the connection to be writable again."""
        if self.writable:
            asyncio.get_running_loop().call_soon(cb)
        else:
            self._drain_callbacks.append(cb)

    @property
    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def on_close(self, cb: Callable[[], None]) -> None:
        self._close_callbacks.append(cb)

    def open_stream(self) -> None:
        """Count one more subscription or follow on this connection; -32600 past ``MAX_STREAMS``."""
        if self.streams >= MAX_STREAMS:
            raise p.RpcError(p.INVALID_REQUEST, f"Invalid Request: this connection already holds {MAX_STREAMS} "
                             "subscriptions and log follows (the limit); open another connection",
                             {"max_streams": MAX_STREAMS})
        self.streams += 1

    def close_stream(self) -> None:
        self.streams = max(0, self.streams - 1)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        full = self.full
        self._tasks.discard(task)
        if full and not self.is_closing:
            self._process()

    def _too_large(self) -> None:
        err = p.RpcError(p.INVALID_REQUEST, f"request line exceeds {p.MAX_LINE} bytes; closing the connection")
        self.send(p.encode_error(None, err))
        self._discard_input()
        if self.transport is not None:
            self.transport.close()


#: What the service answers before its subsystems have started (everything else waits for them).
ANSWERED_WHILE_STARTING = frozenset({"ping", "daemon.status"})


class RpcServer:
    """Maps method names to handlers and serves them on one listening socket."""

    def __init__(self) -> None:
        self.handlers: dict[str, _Entry] = {}
        self.connections: set[Connection] = set()
        self.uid = os.getuid()
        self.server: asyncio.AbstractServer | None = None
        self.accepting = True  # False once a stop begins: only READ_ONLY methods are served then
        self.requests = 0
        self.errors = 0
        self.max_connections = DEFAULT_MAX_CONNECTIONS
        self.partial_line_timeout = PARTIAL_LINE_TIMEOUT
        self.input_budget = INPUT_BUDGET
        self.input_bytes = 0  # incomplete request lines held, over every connection
        self.notifications_dropped = 0  # events not sent to subscribers whose budget was full
        self.notification_errors = 0  # notifications (no reply) that failed: logged, throttled
        self.starving: dict[Connection, None] = {}  # paused for the input budget, oldest first
        self.privileged: Connection | None = None  # the one allowed past the budget to finish its line
        self.throttle = _Throttle()
        #: Set while the service still starts: ping and daemon.status answer at once, a method whose
        #: subsystem is not up yet waits for it (instead of "not available"), then runs.
        self.starting: asyncio.Event | None = None
        #: one listening socket per served project; its connections carry the project (``Connection.project``)
        self.project_servers: dict[str, asyncio.AbstractServer] = {}
        #: the policy gate (``policy.gate.Gate.rpc_hook``): the reason a call is refused for its caller, or None
        self.gate: Callable[[str, Any, Connection], str | None] | None = None

    def wake_starving(self, every: bool = False) -> None:
        """Read again from connections paused for the input budget: all of them once the total has
        fallen, else the oldest, which becomes the one allowed to finish its line."""
        while self.starving:
            conn = next(iter(self.starving))
            del self.starving[conn]
            conn._starved = False
            if not every:
                self.privileged = conn
            conn._set_reading()
            if not every:
                return

    def register(self, method: str, fn: Handler) -> None:
        if method not in p.METHODS:
            raise KeyError(f"{method} is not in protocol.METHODS")
        self.handlers[method] = _Entry(fn)

    @property
    def serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self.server = await loop.create_unix_server(lambda: Connection(self), sock=sock, backlog=1024)

    async def serve_project(self, root: str, sock: socket.socket) -> None:
        """Serve ``sock`` as ``root``'s own socket: whoever connects there is talking about that project."""
        sock.setblocking(False)
        self.project_servers[root] = await asyncio.get_running_loop().create_unix_server(
            lambda: Connection(self, root), sock=sock, backlog=1024)

    def close_project(self, root: str) -> None:
        """Stop listening on ``root``'s socket; its open connections stay (they now get "not served")."""
        srv = self.project_servers.pop(root, None)
        if srv is not None:
            srv.close()

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, answer what accepted connections already sent, then close them.

        Under socket activation, closing our listening fd leaves systemd's socket open, so new connections
        wait in its backlog for the next instance. A request that was already accepted must not be reset:
        give in-flight data a moment to arrive (the next loop turns run ``data_received``) and let running
        handlers finish, within ``grace`` seconds.
        """
        if self.server is not None:
            self.server.close()
        for root in list(self.project_servers):
            self.close_project(root)
        self.accepting = False
        await asyncio.sleep(0.05)
        pending = [t for c in self.connections for t in c._tasks]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self.server is not None:
            await self.server.wait_closed()

    # -- dispatch ---------------------------------------------------------------------------------------
    def handle_line(self, line: bytes, conn: Connection) -> None:
        looplag.poke()  # work arrived: measure how long the loop takes to get back to waiting
        if not line.isascii():
            try:
                line.decode()
            except UnicodeDecodeError as exc:
                # the whole line is not JSON text, batch or not (RFC 8259 8.1); echo the id only if it reads
                # intact (an id holding the bad bytes would come back mangled: null then)
                rid = _salvage_id(line.decode("utf-8", "replace").encode())
                if isinstance(rid, str) and "\ufffd" in rid:
                    rid = None
                conn.send(p.encode_error(rid, p.RpcError(p.PARSE_ERROR, f"Parse error: invalid UTF-8 at byte "
                                                                        f"{exc.start}")))
                return
        first = line.lstrip()[:1]
        if first == b"[":
            self._handle_batch(line, conn)
            return
        try:
            req = p.decode_request(line)
        except msgspec.ValidationError:
            conn.send(p.encode_error(_salvage_id(line), p.RpcError(p.INVALID_REQUEST, "Invalid Request")))
            return
        except msgspec.DecodeError:
            conn.send(p.encode_error(None, p.RpcError(p.PARSE_ERROR, "Parse error")))
            return
        except RecursionError:
            conn.send(p.encode_error(None, _TOO_DEEP))
            return
        out = self._call(req, conn, None)
        if out is not None:
            conn.send(out)

    def _handle_batch(self, line: bytes, conn: Connection) -> None:
        try:
            items = p.decode_batch(line)
        except msgspec.DecodeError:
            conn.send(p.encode_error(None, p.RpcError(p.PARSE_ERROR, "Parse error")))
            return
        except RecursionError:
            conn.send(p.encode_error(None, _TOO_DEEP))
            return
        if not items:
            conn.send(p.encode_error(None, p.RpcError(p.INVALID_REQUEST, "Invalid Request: empty batch")))
            return
        if len(items) <= BATCH_INLINE:
            self._run_batch_now(items, conn)
        else:
            # a long batch is one line but many requests: run it in turns, so other clients get the loop
            conn.spawn(self._run_batch(items, conn))

    def _run_batch_now(self, items: list[msgspec.Raw], conn: Connection) -> None:
        replies: list[bytes] = []
        pending: list[asyncio.Future[bytes | None]] = []
        size = 0
        for raw in items:
            size += self._batch_item(raw, conn, replies, pending, size)
        self._finish_batch(conn, replies, pending)

    async def _run_batch(self, items: list[msgspec.Raw], conn: Connection) -> None:
        """A long batch, in turns of ``TURN_SECONDS``. One connection runs one long batch at a time (the
        others wait for its turn, costing nothing), so a client with 128 batches in flight gets the same
        share of the loop as one with a single batch: fairness is per connection, not per batch."""
        async with conn.batch_turn:
            replies: list[bytes] = []
            pending: list[asyncio.Future[bytes | None]] = []
            size = 0
            until = time.perf_counter() + TURN_SECONDS
            for raw in items:
                if time.perf_counter() > until:
                    await asyncio.sleep(0)
                    until = time.perf_counter() + TURN_SECONDS
                    if conn.is_closing:
                        return
                size += self._batch_item(raw, conn, replies, pending, size)
        self._finish_batch(conn, replies, pending)

    def _batch_item(self, raw: msgspec.Raw, conn: Connection, replies: list[bytes],
                    pending: list[asyncio.Future[bytes | None]], size: int) -> int:
        """Run one item of a batch; returns the bytes its reply added."""
        try:
            req = p.decode_request(bytes(raw))
        except (msgspec.DecodeError, RecursionError):
            replies.append(p.encode_error(_salvage_id(bytes(raw)), p.RpcError(p.INVALID_REQUEST, "Invalid Request")))
            return 0
        if size > OUTPUT_BUDGET:
            # one batch is one reply line: it may not outgrow a connection's budget
            if not req.is_notification:
                replies.append(p.encode_error(req.id, p.RpcError(
                    p.INVALID_REQUEST, f"Invalid Request: not run, the batch's replies passed {OUTPUT_BUDGET} "
                    "bytes; send fewer requests per batch")))
            return 0
        out = self._call(req, conn, in_batch=True)
        if isinstance(out, asyncio.Future):
            pending.append(out)
            return 0
        if out is not None:
            replies.append(out)
            return len(out)
        return 0

    @staticmethod
    def _finish_batch(conn: Connection, replies: list[bytes], pending: list[asyncio.Future[bytes | None]]) -> None:
        async def finish() -> None:
            done = await asyncio.gather(*pending)
            frames = replies + [f for f in done if f is not None]
            if frames:
                conn.send(b"[" + b",".join(f.rstrip(b"\n") for f in frames) + b"]\n")

        if pending:
            conn.spawn(finish())
        elif replies:
            conn.send(b"[" + b",".join(f.rstrip(b"\n") for f in replies) + b"]\n")

    def _call(self, req: p.Request, conn: Connection,
              in_batch: bool = False) -> bytes | asyncio.Future[bytes | None] | None:
        """Run one request. Returns the reply frame now, None (a notification, or a coroutine that answers by
        itself), or, for a request inside a batch whose handler is a coroutine, the future of its reply.

        A notification never yields a future: nobody waits for it, so it can never hold a batch (or a
        connection's slot) open; its failures are logged (throttled) instead of answered."""
        self.requests += 1
        rid = None if req.id is msgspec.UNSET else req.id
        notification = req.is_notification
        entry = self.handlers.get(req.method)
        if (self.starting is not None and not self.starting.is_set() and req.method in p.METHODS
                and req.method not in ANSWERED_WHILE_STARTING):
            self.requests -= 1  # counted when it runs
            waiting: asyncio.Future[bytes | None] | None = None
            if in_batch and not notification:
                waiting = asyncio.get_running_loop().create_future()
            conn.spawn(self._after_start(self.starting, req, conn, waiting))
            return waiting
        if entry is None:
            if req.method in p.METHODS:
                err = p.RpcError(p.METHOD_NOT_FOUND, f"Method not available yet: {req.method}")
            else:
                name = req.method if len(req.method) <= p.MAX_QUOTE else p.quote(req.method)
                err = p.RpcError(p.METHOD_NOT_FOUND, f"Method not found: {name}")
            return self._refuse(req.method, rid, notification, err)
        try:
            params = p.decode_params(req.method, req.params)
        except p.RpcError as err:
            return self._refuse(req.method, rid, notification, err)
        if conn.project is not None and getattr(params, "project", False) is None:
            params.project = conn.project  # the connection says the project; an explicit one still wins
        if self.gate is not None:
            why = self.gate(req.method, params, conn)
            if why is not None:
                return self._refuse(req.method, rid, notification,
                                    p.RpcError(p.NOT_ALLOWED, why, {"method": req.method}))
        if not self.accepting and req.method not in p.READ_ONLY:
            err = p.RpcError(p.SERVER_BUSY, "the service is stopping and takes no new work; retry once it is back")
            return self._refuse(req.method, rid, notification, err)
        if entry.is_async:
            fut: asyncio.Future[bytes | None] | None = None
            if in_batch and not notification:
                fut = asyncio.get_running_loop().create_future()
            conn.spawn(self._run_async(entry, params, conn, rid, notification, fut))
            return fut
        try:
            result = entry.fn(params, conn)
        except p.RpcError as err:
            return self._refuse(req.method, rid, notification, err)
        except Exception:
            return self._internal(req.method, rid, notification)
        return None if notification else self._encode_result(req.method, rid, result)

    async def _after_start(self, started: asyncio.Event, req: p.Request, conn: Connection,
                           batch_fut: asyncio.Future[bytes | None] | None) -> None:
        """A request that came while the service started: run it once every subsystem is up."""
        frame: bytes | None = None
        try:
            await started.wait()
            out = self._call(req, conn, in_batch=batch_fut is not None)
            frame = await out if isinstance(out, asyncio.Future) else out
        finally:
            if batch_fut is not None and not batch_fut.done():  # a batch waiting on it must end
                batch_fut.set_result(frame)
        if batch_fut is None and frame is not None:
            conn.send(frame)

    async def _run_async(self, entry: _Entry, params: Any, conn: Connection, rid: p.ID, notification: bool,
                         batch_fut: asyncio.Future[bytes | None] | None) -> None:
        name = getattr(entry.fn, "__name__", "?")
        frame: bytes | None = None
        try:
            result = await entry.fn(params, conn)
            frame = None if notification else self._encode_result(name, rid, result)
        except p.RpcError as err:
            frame = self._refuse(name, rid, notification, err)
        except Exception:
            frame = self._internal(name, rid, notification)
        finally:
            # cancelled (the client went away) or not, a batch waiting on this reply must end
            if batch_fut is not None and not batch_fut.done():
                batch_fut.set_result(frame)
        if batch_fut is None and frame is not None:
            conn.send(frame)

    def _refuse(self, method: str, rid: p.ID, notification: bool, err: p.RpcError) -> bytes | None:
        """The error reply, or for a notification (which gets none) one throttled log line."""
        if not notification:
            return p.encode_error(rid, err)
        self.notification_errors += 1
        if self.throttle.allow(f"notification error {err.code}"):
            log.info("a notification to %s failed (no reply is sent for notifications): %s",
                     p.quote(method, 80), p.quote(err.message))
        return None

    def _encode_result(self, method: str, rid: p.ID, result: Any) -> bytes:
        """The result frame; a result that cannot be encoded is an internal error, never a dropped reply."""
        try:
            return p.encode_result(rid, result)
        except (TypeError, ValueError, OverflowError, RecursionError, UnicodeEncodeError):
            return self._internal(method, rid, False) or b""

    def _internal(self, method: str, rid: p.ID, notification: bool) -> bytes | None:
        self.errors += 1
        if self.throttle.allow(f"internal error in {method}"):
            log.exception("internal error in %s", method)
        if notification:
            return None
        return p.encode_error(rid, p.RpcError(p.INTERNAL_ERROR, "Internal error (details are in the service log)"))


_TOO_DEEP = p.RpcError(p.PARSE_ERROR, "Parse error: nested too deeply")


def _salvage_id(line: bytes) -> p.ID:
    """The id of an invalid request, when it can be read and is of a valid type; else null."""
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, int | float | str) and not isinstance(rid, bool):
            return rid
    return None


class RpcSubsystem:
    """The JSON-RPC server as a subsystem, so it starts after the engines it serves."""

    name = "ipc"

    def __init__(self, rpc: RpcServer, listen: Callable[[], socket.socket]) -> None:
        self.rpc = rpc
        self.listen = listen

    async def start(self) -> None:
        if not self.rpc.serving:  # the service serves early (ping during start-up): then nothing to do
            await self.rpc.serve(self.listen())

    def apply(self, configs: Any) -> None:
        self.rpc.max_connections = configs.service.daemon.max_connections

    async def stop(self) -> None:
        await self.rpc.close()

    def health(self) -> dict[str, Any]:
        rpc = self.rpc
        return {"connections": len(rpc.connections), "requests": rpc.requests,
                "max_connections": rpc.max_connections, "input_buffered": rpc.input_bytes,
                "notifications_dropped": rpc.notifications_dropped, "internal_errors": rpc.errors,
                "notification_errors": rpc.notification_errors}


# -- the listening socket ---------------------------------------------------------------------------------


class SocketInUse(RuntimeError):
    pass


def bind_socket(path: Path) -> socket.socket:
    """Bind our own socket (no systemd): 0700 directory, 0600 socket, stale file replaced after a probe."""
    paths.ensure_private_dir(path.parent)
    if os.path.lexists(path) and not safefs.is_socket(path):
        # --socket or $AIWG_SOCKET aimed at a file (or a link): deleting it would lose someone's data
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # nobody answers: a stale socket from a crash
        else:
            raise SocketInUse(f"another service is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(1024)
    return sock
