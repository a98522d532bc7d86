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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from . import paths
from . import protocol as p

log = logging.getLogger("aiwg.rpc")

Handler = Callable[[Any, "Connection"], Any]
PEER_REFUSED = -32003


class _Entry:
    __slots__ = ("fn", "is_async")

    def __init__(self, fn: Handler) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)


class Connection(asyncio.Protocol):
    """One client connection: NDJSON in, NDJSON out."""

    def __init__(self, server: RpcServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.peer_pid: int | None = None
        self.peer_uid: int | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._close_callbacks: list[Callable[[], None]] = []
        self._paused = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            self.peer_pid, self.peer_uid, _gid = struct.unpack("3i", creds)
        except OSError:
            self.peer_uid = None
        if self.peer_uid != self.server.uid:
            log.warning("refused a connection from uid %s (pid %s): not the service's user",
                        self.peer_uid, self.peer_pid)
            err = p.RpcError(PEER_REFUSED, "permission denied: this service belongs to another user")
            transport.write(p.encode_error(None, err))
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        for cb in self._close_callbacks:
            try:
                cb()
            except Exception:  # a cleanup hook must not break the others
                log.exception("connection close callback failed")
        self._close_callbacks.clear()
        for t in self._tasks:
            t.cancel()

    def pause_writing(self) -> None:
        # the client is not reading: stop reading its requests until it catches up
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if len(line) > p.MAX_LINE:
                self._too_large()
                return
            if line.strip():
                self.server.handle_line(line, self)
            if self.transport is None or self.transport.is_closing():
                return
        if start:
            del buf[:start]
        if len(buf) > p.MAX_LINE:
            self._too_large()

    # -- helpers for handlers --------------------------------------------------------------------------
    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def notify(self, method: str, params: Any) -> None:
        """Push a server-to-client notification (used by streaming methods)."""
        self.send(p.encode(p.Notification(method=method, params=params)))

    @property
    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def on_close(self, cb: Callable[[], None]) -> None:
        self._close_callbacks.append(cb)

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _too_large(self) -> None:
        err = p.RpcError(p.INVALID_REQUEST, f"request line exceeds {p.MAX_LINE} bytes; closing the connection")
        self.send(p.encode_error(None, err))
        self.buf.clear()
        if self.transport is not None:
            self.transport.close()


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

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, answer what accepted connections already sent, then close them.

        Under socket activation, closing our listening fd leaves systemd's socket open, so new connections
        wait in its backlog for the next instance. A request that was already accepted must not be reset:
        give in-flight data a moment to arrive (the next loop turns run ``data_received``) and let running
        handlers finish, within ``grace`` seconds.
        """
        if self.server is not None:
            self.server.close()
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
        out = self._call(req, conn, None)
        if out is not None:
            conn.send(out)

    def _handle_batch(self, line: bytes, conn: Connection) -> None:
        try:
            items = p.decode_batch(line)
        except msgspec.DecodeError:
            conn.send(p.encode_error(None, p.RpcError(p.PARSE_ERROR, "Parse error")))
            return
        if not items:
            conn.send(p.encode_error(None, p.RpcError(p.INVALID_REQUEST, "Invalid Request: empty batch")))
            return
        pending: list[asyncio.Future[bytes | None]] = []
        replies: list[bytes] = []
        for raw in items:
            try:
                req = p.decode_request(bytes(raw))
            except msgspec.DecodeError:
                replies.append(p.encode_error(_salvage_id(bytes(raw)),
                                              p.RpcError(p.INVALID_REQUEST, "Invalid Request")))
                continue
            fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            out = self._call(req, conn, fut)
            if out is not None:
                replies.append(out)
            elif not fut.done() and req.method in self.handlers and self.handlers[req.method].is_async:
                pending.append(fut)

        async def finish() -> None:
            done = await asyncio.gather(*pending)
            frames = replies + [f for f in done if f is not None]
            if frames:
                conn.send(b"[" + b",".join(f.rstrip(b"\n") for f in frames) + b"]\n")

        if pending:
            conn.spawn(finish())
        elif replies:
            conn.send(b"[" + b",".join(f.rstrip(b"\n") for f in replies) + b"]\n")

    def _call(self, req: p.Request, conn: Connection, batch_fut: asyncio.Future[bytes | None] | None) -> bytes | None:
        """Run one request. Returns the reply frame now, or None (notification, or answered later)."""
        self.requests += 1
        rid = None if req.id is msgspec.UNSET else req.id
        notification = req.is_notification
        entry = self.handlers.get(req.method)
        if entry is None:
            if req.method in p.METHODS:
                err = p.RpcError(p.METHOD_NOT_FOUND, f"Method not available yet: {req.method}")
            else:
                err = p.RpcError(p.METHOD_NOT_FOUND, f"Method not found: {req.method}")
            return None if notification else p.encode_error(rid, err)
        try:
            params = p.decode_params(req.method, req.params)
        except p.RpcError as err:
            return None if notification else p.encode_error(rid, err)
        if not self.accepting and req.method not in p.READ_ONLY:
            err = p.RpcError(p.SERVER_BUSY, "the service is stopping and takes no new work; retry once it is back")
            return None if notification else p.encode_error(rid, err)
        if entry.is_async:
            conn.spawn(self._run_async(entry, params, conn, rid, notification, batch_fut))
            return None
        try:
            result = entry.fn(params, conn)
        except p.RpcError as err:
            return None if notification else p.encode_error(rid, err)
        except Exception:
            return self._internal(req.method, rid, notification)
        return None if notification else p.encode_result(rid, result)

    async def _run_async(self, entry: _Entry, params: Any, conn: Connection, rid: p.ID, notification: bool,
                         batch_fut: asyncio.Future[bytes | None] | None) -> None:
        frame: bytes | None
        try:
            result = await entry.fn(params, conn)
            frame = None if notification else p.encode_result(rid, result)
        except p.RpcError as err:
            frame = None if notification else p.encode_error(rid, err)
        except asyncio.CancelledError:
            raise
        except Exception:
            frame = self._internal(getattr(entry.fn, "__name__", "?"), rid, notification)
        if batch_fut is not None:
            batch_fut.set_result(frame)
        elif frame is not None:
            conn.send(frame)

    def _internal(self, method: str, rid: p.ID, notification: bool) -> bytes | None:
        self.errors += 1
        log.exception("internal error in %s", method)
        if notification:
            return None
        return p.encode_error(rid, p.RpcError(p.INTERNAL_ERROR, "Internal error (details are in the service log)"))


def _salvage_id(line: bytes) -> p.ID:
    """The id of an invalid request, when it can be read and is of a valid type; else null."""
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError:
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
        await self.rpc.serve(self.listen())

    async def stop(self) -> None:
        await self.rpc.close()

    def health(self) -> dict[str, Any]:
        return {"connections": len(self.rpc.connections), "requests": self.rpc.requests}


# -- the listening socket ---------------------------------------------------------------------------------


class SocketInUse(RuntimeError):
    pass


def bind_socket(path: Path) -> socket.socket:
    """Bind our own socket (no systemd): 0700 directory, 0600 socket, stale file replaced after a probe."""
    paths.ensure_private_dir(path.parent)
    if path.exists() or path.is_symlink():
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
