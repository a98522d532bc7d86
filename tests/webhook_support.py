"""Senders for tests and the bench: signatures computed here from each spec, not with the service's code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
from typing import Any

SECRETS = {"AIWG_TEST_GH": "gh-secret-0123456789-abcdefghijklmnop",
           "AIWG_TEST_GL": "gl-token-0123456789-abcdefghijklmnop",
           "AIWG_TEST_STD": "whsec_" + base64.b64encode(b"standard-key-0123456789-abcdefghij").decode(),
           "AIWG_TEST_TOK": "bearer-token-0123456789-abcdefghijklm"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def github_headers(secret: str, body: bytes, delivery: str, event: str = "push") -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={sig}", "X-GitHub-Delivery": delivery, "X-GitHub-Event": event,
            "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/test"}


def gitlab_headers(secret: str, body: bytes, delivery: str, event: str = "Push Hook") -> dict[str, str]:
    return {"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Event": event,
            "Content-Type": "application/json"}


def standard_headers(secret: str, body: bytes, delivery: str, ts: int | None = None) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    ts = int(time.time()) if ts is None else ts
    signed = f"{delivery}.{ts}.".encode() + body
    sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": delivery, "webhook-timestamp": str(ts), "webhook-signature": f"v1,{sig}",
            "Content-Type": "application/json"}


def token_headers(secret: str, body: bytes, delivery: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Idempotency-Key": delivery, "Content-Type": "application/json"}


def post(port: int, path: str, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "POST",
         source: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data) if data else None
    except ValueError:
        return resp.status, data.decode(errors="replace")
