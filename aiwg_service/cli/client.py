"""A small blocking JSON-RPC client over the Unix socket, for aiwgctl and scripts."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from .. import protocol as p


class NotRunning(Exception):
    """No service answers on the socket."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"aiwg-service is not running (no answer on {path}: {reason})")
        self.path = path


class Dropped(NotRunning):
    """The connection closed (or was reset) before the reply: the service died or stopped mid-request.

    The request may or may not have been carried out; callers may resend only what changes nothing.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, "the service closed the connection")


class Client:
    def __init__(self, path: Path, timeout: float | None = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except FileNotFoundError:
            self.sock.close()
            raise NotRunning(path, "no such socket") from None
        except (TimeoutError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise NotRunning(path, exc.strerror or "refused") from None
        except PermissionError:
            self.sock.close()
            raise NotRunning(path, "permission denied (is it another user's socket?)") from None
        self._rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self._rfile.close()
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
        try:
            self.sock.sendall(p.encode(req))
        except (BrokenPipeError, ConnectionResetError):  # not aiwgctl's stdout: never a silent exit 0
            self._refusal()
            raise Dropped(self.path) from None
        return rid

    def _refusal(self) -> None:
        """The service may have said why it closed before we wrote (too many connections, another user's
        socket): raise that, rather than a misleading "not running"."""
        try:
            line = self._rfile.readline(64 * 1024)
            msg = msgspec.json.decode(line) if line else None
        except (OSError, msgspec.DecodeError):
            return
        if isinstance(msg, dict) and msg.get("id") is None and isinstance(msg.get("error"), dict):
            raise _error(msg["error"])

    def read(self) -> dict[str, Any]:
        try:
            line = self._rfile.readline(p.MAX_LINE + 2)
        except ConnectionResetError:
            raise Dropped(self.path) from None
        if not line:
            raise Dropped(self.path)
        return msgspec.json.decode(line)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        rid = self.send(method, params)
        while True:
            msg = self.read()
            if msg.get("id") != rid:
                if msg.get("id") is None and "error" in msg:
                    raise _error(msg["error"])  # refused before reading us (too many connections, ...)
                continue  # a notification on a streaming connection
            if "error" in msg:
                raise _error(msg["error"])
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
                raise _error(msg["error"])
            yield msg


def _error(err: dict[str, Any]) -> p.RpcError:
    """The service's error object as the exception aiwgctl reports."""
    return p.RpcError(err.get("code", p.INTERNAL_ERROR), err.get("message", "error"), err.get("data"))
