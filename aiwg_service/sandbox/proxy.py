"""The filtering proxy of ``network: allow``: HTTP CONNECT (and plain-HTTP requests) to the hosts a profile
lists, nothing else; every refusal is logged with the task's id.

One listener per task, on a Unix socket the service owns (``netfwd`` serves it on 127.0.0.1 inside the
agent's network namespace, given to the agent as ``HTTPS_PROXY``/``HTTP_PROXY``): the socket says which task
is asking, with no credentials to forge.  It runs in the service: while the service restarts, an agent's
new connections fail (the runs themselves go on) until the service re-creates the task's proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["Proxy", "allowed", "proxy_env"]

log = logging.getLogger(__name__)
HEADER_LIMIT = 64 * 1024


def proxy_env(addr: str) -> dict[str, str]:
    url = f"http://{addr}"
    return {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url, "ALL_PROXY": url,
            "all_proxy": url, "NO_PROXY": "", "no_proxy": ""}


def _split(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host.lower(), int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host.lower(), int(port)
    return entry.lower(), None


def allowed(host: str, port: int, allow_hosts: Sequence[str]) -> bool:
    """``host:port`` matches an entry: a name (``*.example.com`` for subdomains), an address or a CIDR, with an
    optional ``:port``."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for entry in allow_hosts:
        name, only = _split(entry)
        if only is not None and only != port:
            continue
        if addr is not None:
            try:
                if addr in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if name.startswith("*.") and host.endswith(name[1:]):
            return True
        if host == name.rstrip("."):
            return True
    return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


class Proxy:
    """One task's proxy on ``path`` (a Unix socket, 0600)."""

    def __init__(self, task_id: str, allow_hosts: Sequence[str], path: str) -> None:
        self.task_id = task_id
        self.allow_hosts = list(allow_hosts)
        self.path = path
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen at ``path``, in a directory of its own: the directory is what is bound into the sandbox, so
        a restarted service's new socket there is the one the agent reaches."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, self.path, limit=HEADER_LIMIT)
        finally:
            os.umask(old)

    async def close(self, *, remove_dir: bool = False) -> None:
        """Stop listening; ``remove_dir`` once the run is over (a restart keeps it: the sandbox binds it)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if remove_dir:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path))

    def _refuse(self, host: str, port: int) -> bytes:
        self.refused += 1
        log.warning("task %s: the sandbox refused a connection to %s:%d (not in its allow_hosts)",
                    self.task_id, host, port, extra={"TASK_ID": self.task_id})
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            await self._dispatch(head, reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        if method.upper() == "CONNECT":
            host, port = _split(target)
            port = port or 443
            rest = b""
        else:
            u = urlsplit(target)
            if u.scheme != "http" or not u.hostname:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                return
            host, port = u.hostname, u.port or 80
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            kept = [h for h in lines[1:] if h and not h.lower().startswith(("proxy-", "connection:"))]
            rest = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode("latin-1")
        if not allowed(host, port, self.allow_hosts):
            writer.write(self._refuse(host, port))
            await writer.drain()
            return
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 30.0)
        except (OSError, TimeoutError) as e:
            log.info("task %s: proxy cannot reach %s:%d: %s", self.task_id, host, port, e,
                     extra={"TASK_ID": self.task_id})
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        if rest:
            up_w.write(rest)
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        finally:
            up_w.close()
