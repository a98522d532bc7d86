"""Logging in to the dashboard as Jupyter does: a one-time token in a URL, traded for a session cookie.

``aiwgctl web`` asks for the URL over the owner-only RPC socket (``web.login``), so only the owner can get
one. The token works once, for ``TOKEN_TTL`` seconds; its visit sets an HttpOnly, SameSite=Strict cookie.
Each session has its own CSRF token, which every state-changing request must carry. Only hashes of the
session ids are kept (in ``web-sessions.json``, 0600), so a reload or restart keeps people logged in and a
leaked state file logs nobody in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from ..atomic import write_atomic

log = logging.getLogger("aiwg.web")

TOKEN_TTL = 120.0
SESSION_TTL = 30 * 86400.0
MAX_SESSIONS = 64


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Sessions:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tokens: dict[str, float] = {}  # digest of a one-time token -> expiry (monotonic)
        self.sessions: dict[str, dict[str, Any]] = {}  # digest of a session id -> {csrf, created, seen}
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
            now = time.time()
            self.sessions = {k: v for k, v in data.get("sessions", {}).items()
                             if isinstance(v, dict) and isinstance(v.get("csrf"), str)
                             and now - float(v.get("seen", 0)) < SESSION_TTL}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("web: %s is unreadable (%s); every browser logs in again", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_atomic(self.path, json.dumps({"sessions": self.sessions}).encode(), mode=0o600)
        except OSError as exc:
            log.warning("web: cannot save sessions to %s: %s", self.path, exc)

    def one_time_token(self) -> str:
        now = time.monotonic()
        self.tokens = {k: exp for k, exp in self.tokens.items() if exp > now}
        token = secrets.token_urlsafe(32)
        self.tokens[_digest(token)] = now + TOKEN_TTL
        return token

    def redeem(self, token: str) -> tuple[str, str] | None:
        """A fresh (session id, csrf token) for a valid one-time token, which is spent; else None."""
        exp = self.tokens.pop(_digest(token), None)
        if exp is None or exp < time.monotonic():
            return None
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        self.sessions[_digest(sid)] = {"csrf": csrf, "created": now, "seen": now}
        if len(self.sessions) > MAX_SESSIONS:  # the oldest go first
            for k in sorted(self.sessions, key=lambda k: self.sessions[k]["seen"])[:-MAX_SESSIONS]:
                del self.sessions[k]
        self._save()
        return sid, csrf

    def session(self, sid: str | None) -> dict[str, Any] | None:
        if not sid:
            return None
        s = self.sessions.get(_digest(sid))
        if s is None:
            return None
        now = time.time()
        if now - s["seen"] > SESSION_TTL:
            del self.sessions[_digest(sid)]
            self._save()
            return None
        if now - s["seen"] > 3600:  # write at most hourly: reading pages costs no disk
            s["seen"] = now
            self._save()
        return s

    def logout(self, sid: str) -> None:
        if self.sessions.pop(_digest(sid), None) is not None:
            self._save()

    @staticmethod
    def csrf_ok(session: dict[str, Any], presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(session["csrf"].encode(), str(presented).encode())
