"""The web subsystem: the dashboard and ``/metrics`` on their own listener, and the ``web.login`` RPC method.

Off unless the service-wide file says ``web.enabled``; only then are aiohttp, Jinja2 and prometheus_client
imported. It listens on what ``aiwg-web.socket`` passed (``FileDescriptorName=web``: a loopback TCP port and a
Unix socket for a reverse proxy), else binds ``web.bind:web.port`` and ``web.sock`` beside the RPC socket.

Ports, not the service: the RPC server (its methods are called in-process, see ``local``), ``state_dir``, the
inherited fds, the finished-runs reader of the task store, the secret reader, and where the RPC socket lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import protocol as p
from .auth import TOKEN_TTL, Sessions
from .local import LocalRpc
from .schema import DEFAULT_PORT, WebSection

if TYPE_CHECKING:
    from aiohttp import web

    from .app import Ports

log = logging.getLogger("aiwg.web")

#: the names systemd may give the web fds: ours (FileDescriptorName=web), or the unit's name by default
FD_NAMES = ("web", "aiwg-web.socket")


class WebSubsystem:
    name = "web"

    def __init__(self, rpc: Any, state_dir: Path | str, *,
                 inherited_fds: Callable[[], list[int]] = list,
                 finished_since: Callable[[str], list[Any]] = lambda _since: [],
                 read_secret: Callable[[str], str | None] = lambda _n: None,
                 socket_dir: Callable[[], Path] | None = None) -> None:
        self.local = LocalRpc(rpc)
        self.sessions = Sessions(Path(state_dir) / "web-sessions.json")
        self.inherited_fds = inherited_fds
        self.finished_since = finished_since
        self.read_secret = read_secret
        self.socket_dir = socket_dir
        self.section = WebSection()
        self.runner: web.AppRunner | None = None
        self.ports: Ports | None = None
        self.address: tuple[str, int] | None = None
        self.unix: str | None = None
        self.from_systemd = False
        self.error: str | None = None
        self._own_unix: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Nothing until ``apply`` reads the config: a service with the dashboard off imports nothing for it."""

    async def stop(self) -> None:
        await self._close()

    async def _close(self) -> None:
        if self.ports is not None:
            for s in list(self.ports.streams):
                s.close()  # a live stream ends now, not at the runner's shutdown timeout
        if self.runner is not None:
            await self.runner.cleanup()
        if self._own_unix is not None:
            with contextlib.suppress(OSError):
                self._own_unix.unlink()
        self.runner = self.ports = None
        self.address = self.unix = self._own_unix = None

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": self.enabled,
                               "listening": f"{self.address[0]}:{self.address[1]}" if self.address else None,
                               "unix": self.unix, "from_systemd": self.from_systemd,
                               "sessions": len(self.sessions.sessions),
                               "streams": len(self.ports.streams) if self.ports else 0}
        if self.error:
            out["error"] = self.error
        return out

    # -- configuration -----------------------------------------------------------------------------------------
    async def apply(self, configs: Any) -> None:
        section: WebSection = configs.service.web
        self.section = section
        if not self.enabled:
            if self.runner is not None:
                log.info("web: web.enabled is false; the dashboard no longer listens")
            await self._close()
            self.error = None
            return
        want = (section.bind, section.port)
        if self.runner is not None and (self.from_systemd or self.address == want):
            return
        await self._close()
        await self._listen(want)

    @property
    def enabled(self) -> bool:
        on = self.section.enabled
        return bool(self.inherited_fds()) if on is None else on

    def _metrics_token(self) -> str | None:
        return self.read_secret(self.section.metrics_token_env)

    async def _listen(self, want: tuple[str, int]) -> None:
        from aiohttp import web

        from .app import Ports, build

        ports = Ports(rpc=self.local, sessions=self.sessions, finished_since=self.finished_since,
                      metrics_token=self._metrics_token, cookie=f"aiwg_session_{want[1]}")
        runner = web.AppRunner(build(ports), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sites: list[web.BaseSite] = []
        fds = self.inherited_fds()
        try:
            if fds:
                for fd in fds:
                    sock = socket.socket(fileno=os.dup(fd))  # a dup: closing the site never closes systemd's fd
                    sites.append(web.SockSite(runner, sock))
                    if sock.family == socket.AF_UNIX:
                        self.unix = str(sock.getsockname())
                self.from_systemd = True
            else:
                sites.append(web.TCPSite(runner, want[0], want[1], reuse_address=True))
                self.from_systemd = False
                own = self._own_unix_socket()
                if own is not None:
                    sites.append(web.SockSite(runner, own))
            for site in sites:
                await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._drop_own_unix()
            self.error = f"cannot listen on {want[0]}:{want[1]}: {exc.strerror or exc}"
            log.error("web: %s (is another program using port %d? change web.port); the dashboard is off, the rest "
                      "of the service runs", self.error, want[1])
            return
        tcp = [a for a in runner.addresses if isinstance(a, tuple)]
        self.address = tuple(tcp[0][:2]) if tcp else None  # type: ignore[assignment]
        self.runner, self.ports, self.error = runner, ports, None
        if self.address is not None and self.from_systemd and self.address[1] != want[1]:
            log.warning("web: aiwg-web.socket listens on port %d but web.port is %d; run `aiwgctl install --web` "
                        "to rewrite it", self.address[1], want[1])
        if self.address is not None:
            ports.cookie = f"aiwg_session_{self.address[1]}"
        log.info("web: the dashboard listens on %s%s%s", self.base_url() or "-",
                 f" and {self.unix}" if self.unix else "", " (sockets from systemd)" if self.from_systemd else "")

    def _own_unix_socket(self) -> socket.socket | None:
        """``web.sock`` beside the RPC socket (0600 in a 0700 directory), for a reverse proxy in the foreground."""
        if self.socket_dir is None:
            return None
        path = self.socket_dir() / "web.sock"
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # ours from a previous run: the lock we hold says no other service uses it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            log.warning("web: cannot bind %s: %s (the TCP listener still serves)", path, exc.strerror)
            return None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        self._own_unix, self.unix = path, str(path)
        return sock

    def _drop_own_unix(self) -> None:
        if self._own_unix is not None:
            with contextlib.suppress(OSError):
                self._own_unix.unlink()
        self._own_unix = self.unix = None

    def base_url(self) -> str | None:
        if self.address is None:
            return None
        host = self.address[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.address[1]}"

    # -- RPC ---------------------------------------------------------------------------------------------------
    def register_rpc(self, rpc: Any) -> None:
        rpc.register("web.login", self.rpc_login)

    def rpc_login(self, _params: p.NoParams, _conn: Any = None) -> dict[str, Any]:
        """A one-time login URL: only the owner can ask (the RPC socket checks the peer's uid)."""
        from urllib.parse import quote

        base = self.base_url()
        if base is None:
            why = self.error or ("it is not enabled: run `aiwgctl install --web`, or set web.enabled in the "
                                 "service-wide config" if not self.enabled else "the dashboard is not listening")
            raise p.RpcError(p.SERVER_BUSY, f"the dashboard is off: {why}")
        token = self.sessions.one_time_token()
        return {"url": f"{base}/login?token={quote(token)}", "expires_in": int(TOKEN_TTL), "unix": self.unix,
                "port": self.address[1] if self.address else DEFAULT_PORT}
