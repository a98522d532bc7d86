"""The listener's edge, below HTTP: how many connections, from whom, for how long.

aiohttp has no cap on connections and no deadline for a request's headers, so 1,100 half-open connections
from any local user once took every fd the service had. Each accepted connection here goes through a
``Guarded`` protocol first: past the cap (total, or per source address) it is answered 503 and closed at once;
admitted, its request headers must be complete within ``header_timeout`` of the connection (or of the last
answer, for keep-alive) and the whole request handled within ``body_timeout`` of its headers, else it is
closed. Refusals and closes are logged once per interval with a count; aiohttp's own tracebacks for
malformed requests and broken connections become one throttled line (``quiet_aiohttp``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("aiwg.webhooks")

#: fds kept for everything but the webhook listener (the RPC socket's clients, the stores, agents' pipes)
FD_RESERVE = 512
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def fd_room() -> int:
    """How many connections the listener may hold: the fd limit less ``FD_RESERVE``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(16, soft - FD_RESERVE)


class Tally:
    """Counts of one kind of event, logged at most once per ``every`` seconds (with how many since)."""

    def __init__(self, what: str, every: float = 10.0) -> None:
        self.what, self.every = what, every
        self.total = 0
        self._since = 0
        self._last = -every

    def add(self, detail: str) -> None:
        self.total += 1
        self._since += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning("webhooks: %s (%d in the last %.0f s; %s)", self.what, self._since,
                        min(now - self._last, self.every), detail)
            self._last = now
            self._since = 0


class Guard:
    """The caps and deadlines of one listener, and the counts ``health()`` shows."""

    def __init__(self, max_connections: int = 256, per_source: int = 32, header_timeout: float = 5.0,
                 body_timeout: float = 10.0) -> None:
        self.max_connections = max_connections
        self.per_source = per_source
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.open = 0
        self.by_source: dict[str, int] = {}
        self.refused = Tally("refused connections over the cap")
        self.timed_out = Tally("closed connections that sent no complete request in time")
        self._by_handler: dict[int, Guarded] = {}

    @property
    def cap(self) -> int:
        return min(self.max_connections, fd_room())

    def counts(self) -> dict[str, int]:
        return {"open_connections": self.open, "max_connections": self.cap, "refused_connections": self.refused.total,
                "timed_out_connections": self.timed_out.total}

    def factory(self, server: Callable[[], Any]) -> Callable[[], Guarded]:
        return lambda: Guarded(self, server)

    # the middleware's view: a request's headers are in, then its answer is out
    def request_started(self, handler: object) -> None:
        g = self._by_handler.get(id(handler))
        if g is not None:
            g.arm(self.body_timeout)

    def request_done(self, handler: object) -> None:
        g = self._by_handler.get(id(handler))
        if g is not None:
            g.arm(self.header_timeout)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def deadlines(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
            self.request_started(request.protocol)
            try:
                return await handler(request)
            finally:
                self.request_done(request.protocol)

        return deadlines


class Guarded(asyncio.Protocol):
    """One connection: admitted (and handed to aiohttp's handler) or refused, and closed when too slow."""

    def __init__(self, guard: Guard, server: Callable[[], Any]) -> None:
        self.guard = guard
        self.server = server
        self.inner: Any = None
        self.source = "?"
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        g = self.guard
        if g.open >= g.cap or g.by_source.get(self.source, 0) >= g.per_source:
            g.refused.add(f"last from {self.source}: {g.open} open, cap {g.cap}, {g.per_source} per source")
            try:
                transport.write(_BUSY)  # type: ignore[attr-defined]
            finally:
                transport.close()
            return
        g.open += 1
        g.by_source[self.source] = g.by_source.get(self.source, 0) + 1
        self.inner = self.server()
        g._by_handler[id(self.inner)] = self
        self.inner.connection_made(transport)
        self.arm(g.header_timeout)

    def arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        self.guard.timed_out.add(f"last from {self.source}")
        if self.inner is not None:
            self.inner.force_close()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.inner is None:
            return
        g = self.guard
        g.open -= 1
        n = g.by_source.get(self.source, 1) - 1
        if n:
            g.by_source[self.source] = n
        else:
            g.by_source.pop(self.source, None)
        g._by_handler.pop(id(self.inner), None)
        inner, self.inner = self.inner, None
        inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    """aiohttp's ``SockSite``, with every connection going through ``guard`` first."""

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: Guard) -> None:
        super().__init__(runner, backlog=1024)
        self._sock = sock
        self._guard = guard
        host, port = sock.getsockname()[:2]
        self._name = f"http://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server), sock=self._sock, backlog=self._backlog)


class _Quiet(logging.Filter):
    """aiohttp's server-side errors (a malformed request, a client gone mid-body) without their tracebacks,
    and at most one line per ``every`` seconds for each message, saying how many were left out."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self._seen: dict[str, list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        st = self._seen.get(key)
        if st is not None and now - st[0] < self.every:
            st[1] += 1
            return False
        if len(self._seen) > 100:
            self._seen.clear()
        more = int(st[1]) if st is not None else 0
        self._seen[key] = [now, 0]
        if more:
            record.msg = f"{record.msg} ({more} more like it since the last line)"
        return True


_quiet = _Quiet()


def quiet_aiohttp() -> None:
    """Install the filter on aiohttp's loggers (once; idempotent)."""
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal"):
        lg = logging.getLogger(name)
        if _quiet not in lg.filters:
            lg.addFilter(_quiet)
