"""Signature checks on the raw body, before anything parses it. Each returns a ``Verdict``.

All comparisons use ``hmac.compare_digest``. What a refusal says is only the category (missing, bad, stale), so
an attacker learns nothing about the secret or the expected value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TOLERANCE_S = 300  # Standard Webhooks: a timestamp more than 5 minutes off is refused


@dataclass(slots=True, frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # for the log: "missing signature", "bad signature", "stale timestamp" ...
    delivery_id: str | None = None


OK = Verdict(True)


def _hmac256(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.digest()


def github(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    delivery = headers.get("X-GitHub-Delivery")
    sig = headers.get("X-Hub-Signature-256")
    if not sig:
        return Verdict(False, "missing signature (X-Hub-Signature-256)", delivery)
    if not sig.startswith("sha256="):
        return Verdict(False, "bad signature", delivery)
    want = "sha256=" + _hmac256(key, body).hex()
    if not hmac.compare_digest(sig.encode(), want.encode()):
        return Verdict(False, "bad signature", delivery)
    return Verdict(True, "", delivery)


def gitlab(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    delivery = headers.get("Idempotency-Key") or headers.get("X-Gitlab-Event-UUID")
    token = headers.get("X-Gitlab-Token")
    if not token:
        return Verdict(False, "missing token (X-Gitlab-Token)", delivery)
    if not hmac.compare_digest(token.encode(), key):
        return Verdict(False, "bad token", delivery)
    return Verdict(True, "", delivery)


def standard(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    """Standard Webhooks: HMAC-SHA256 over ``id.timestamp.body``, base64, ``v1,<sig>`` (space-separated list)."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return Verdict(False, "missing signature headers (webhook-id, webhook-timestamp, webhook-signature)", msg_id)
    try:
        when = int(ts)
    except ValueError:
        return Verdict(False, "malformed timestamp", msg_id)
    if abs(now - when) > TOLERANCE_S:
        return Verdict(False, "stale timestamp (more than 5 minutes off)", msg_id)
    want = base64.b64encode(_hmac256(key, msg_id.encode(), b".", ts.encode(), b".", body))
    for item in sigs.split():
        version, _, sig = item.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), want):
            return Verdict(True, "", msg_id)
    return Verdict(False, "bad signature", msg_id)


def token(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    delivery = headers.get("Idempotency-Key")
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if not auth:
        return Verdict(False, "missing token (Authorization: Bearer)", delivery)
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), key):
        return Verdict(False, "bad token", delivery)
    return Verdict(True, "", delivery)


VERIFIERS: dict[str, Callable[[bytes, Mapping[str, str], bytes, float], Verdict]] = {
    "github": github, "gitlab": gitlab, "standard": standard, "token": token,
}


def sign_headers(kind: str, key: bytes, body: bytes, delivery_id: str, event: str | None = None,
                 now: float | None = None) -> dict[str, str]:
    """The headers a sender of this kind would add (``aiwgctl webhook test``, the tests and the bench)."""
    now = time.time() if now is None else now
    if kind == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hmac256(key, body).hex(), "X-GitHub-Delivery": delivery_id,
                "X-GitHub-Event": event or "ping"}
    if kind == "gitlab":
        return {"X-Gitlab-Token": key.decode(), "X-Gitlab-Event-UUID": delivery_id,
                "X-Gitlab-Event": event or "System Hook"}
    if kind == "standard":
        ts = str(int(now))
        sig = base64.b64encode(_hmac256(key, delivery_id.encode(), b".", ts.encode(), b".", body)).decode()
        return {"webhook-id": delivery_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"}
    return {"Authorization": f"Bearer {key.decode()}", "Idempotency-Key": delivery_id}
