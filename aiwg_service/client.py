"""A small blocking JSON-RPC client over the Unix socket, for aiwgctl, scripts and bridges.

It imports only ``_socket``, ``jsonlite`` and ``wire``: no ``socket`` (which pulls in ``enum``), no ``json``
(which pulls in ``re``). That is what keeps ``aiwgctl ping`` close to a bare interpreter start.
"""

from __future__ import annotations

import _socket
import itertools
import os
import sys

from . import jsonlite
from .wire import MAX_LINE, RpcError

# typing and collections.abc cost milliseconds at import: this module is on aiwgctl's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class NotRunning(Exception):
    """No service answers on the socket."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"aiwg-service is not running (no answer on {path}: {reason})")
        self.path = path


class Impostor(NotRunning):
    """The socket is not our own service's: another user serves it, or could have put it there.

    Raised before a single byte of the request is sent (as ssh-agent and tmux refuse such sockets)."""

    def __init__(self, path: str, why: str) -> None:
        Exception.__init__(self, f"refusing to talk to {path}: {why}")
        self.path = path


def check_socket_dir(path: str) -> None:
    """The socket's (real) directory must be ours and 0700: nobody else could have put a socket there."""
    d = os.path.dirname(os.path.realpath(path) if os.path.islink(path) else path) or "."
    try:
        st = os.stat(d)
    except OSError:
        return  # connect() says what is missing
    uid = os.getuid()
    if st.st_uid != uid:
        raise Impostor(path, f"its directory {d} belongs to uid {st.st_uid}, not to you (uid {uid})")
    if st.st_mode & 0o077:
        raise Impostor(path, f"its directory {d} is mode {st.st_mode & 0o777:04o}, not 0700 "
                             f"(fix: chmod 700 {d})")


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process that listens, from the kernel (SO_PEERCRED: struct ucred {pid, uid, gid})."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


class Dropped(NotRunning):
    """The connection closed (or was reset) before the reply: the service died or stopped mid-request.

    The request may or may not have been carried out; callers may resend only what changes nothing.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, "the service closed the connection")


class Client:
    """One connection. The server's uid is checked on connect (SO_PEERCRED) and its directory before."""

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        check_socket_dir(self.path)
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except FileNotFoundError:
            self.sock.close()
            raise NotRunning(self.path, "no such socket") from None
        except (TimeoutError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise NotRunning(self.path, exc.strerror or "refused") from None
        except PermissionError:
            self.sock.close()
            raise NotRunning(self.path, "permission denied (is it another user's socket?)") from None
        uid = peer_uid(self.sock)
        if uid != os.getuid():
            self.sock.close()
            raise Impostor(self.path, f"it is served by uid {uid}, not by you (uid {os.getuid()})")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        rid = next(self._ids)
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params:
            req["params"] = {k: v for k, v in params.items() if v is not None}
        frame = jsonlite.dumps(req, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            self.sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):  # not aiwgctl's stdout: never a silent exit 0
            self._refusal()
            raise Dropped(self.path) from None
        return rid

    def _refusal(self) -> None:
        """The service may have said why it closed before we wrote (too many connections, another user's
        socket): raise that, rather than a misleading "not running"."""
        try:
            msg = jsonlite.loads(self._readline())
        except (OSError, ValueError, NotRunning):
            return
        if isinstance(msg, dict) and msg.get("id") is None and isinstance(msg.get("error"), dict):
            raise RpcError.from_object(msg["error"])

    def _readline(self) -> bytes:
        while True:
            nl = self._buf.find(b"\n", self._scanned)
            if nl >= 0:
                line = bytes(self._buf[: nl + 1])
                del self._buf[: nl + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buf)
            if len(self._buf) > MAX_LINE + 2:
                raise Dropped(self.path)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                raise Dropped(self.path) from None
            if not chunk:
                raise Dropped(self.path)
            self._buf += chunk

    def read(self) -> dict[str, Any]:
        return jsonlite.loads(self._readline())

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        rid = self.send(method, params)
        while True:
            msg = self.read()
            if msg.get("id") != rid:
                if msg.get("id") is None and "error" in msg:
                    raise RpcError.from_object(msg["error"])  # refused before reading us (too many connections)
                continue  # a notification on a streaming connection
            if "error" in msg:
                raise RpcError.from_object(msg["error"])
            return msg.get("result")

    def stream(self, method: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Call a streaming method: yield its reply first, then each notification until the socket closes."""
        rid = self.send(method, params)
        self.sock.settimeout(None)
        while True:
            try:
                msg = self.read()
            except NotRunning:
                return
            if msg.get("id") == rid and "error" in msg:
                raise RpcError.from_object(msg["error"])
            yield msg
