"""The HTTP side: one aiohttp handler that limits, verifies, de-duplicates and publishes a delivery.

Order of the checks, cheapest first, so a flood or a forger costs little: method (405), hook id (404), token
buckets per source address and per hook (429), declared size (413), the raw body with the size cap (413), the
signature on the raw body (401), the payload's syntax (400), the delivery id seen before (200, nothing
published). Then the events go on the bus and the answer is 202: rules run after the sender has its answer.
No answer carries internal detail; each refusal is logged with the hook id and the reason, rate-limited.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EofStream

from ..protocol import utc_now
from .dedup import DeliveryLog
from .guard import Guard
from .hooks import LiveHook, Publish
from .limits import Buckets, LogLimiter

log = logging.getLogger("aiwg.webhooks")

#: headers a rule may want; signatures and tokens are never copied into events
KEEP_HEADERS = ("User-Agent", "Content-Type", "X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID",
                "X-Gitlab-Event", "X-Gitlab-Event-UUID", "X-Gitlab-Instance", "webhook-id", "webhook-timestamp",
                "Idempotency-Key")
MAX_CAP = 64 * 1024 * 1024
EVENT_HEADER = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event"}


def _body(status: int, **fields: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(fields).encode(), content_type="application/json")


class Receiver:
    def __init__(self, publish: Publish, deliveries: DeliveryLog) -> None:
        self.publish = publish
        self.deliveries = deliveries
        self.hooks: dict[str, LiveHook] = {}
        self.max_body = 1024 * 1024
        self.per_hook = Buckets(20.0, 100)
        self.per_source = Buckets(10.0, 50)
        self.logs = LogLimiter(log)
        self.counts: dict[str, int] = {}
        self.guard = Guard()

    def configure(self, hooks: dict[str, LiveHook], max_body: int, per_hook: Buckets, per_source: Buckets) -> None:
        for h in hooks.values():  # counters and the last delivery carry over a reload
            old = self.hooks.get(h.id)
            if old is not None:
                h.accepted, h.duplicates, h.refused, h.last = old.accepted, old.duplicates, old.refused, old.last
        self.hooks = hooks
        self.max_body = max_body
        if (per_hook.rate, per_hook.burst) != (self.per_hook.rate, self.per_hook.burst):
            self.per_hook = per_hook
        if (per_source.rate, per_source.burst) != (self.per_source.rate, self.per_source.burst):
            self.per_source = per_source

    def app(self) -> web.Application:
        # the cap is ours (self.max_body, reloadable); aiohttp's own limit only has to be above any allowed cap
        app = web.Application(client_max_size=MAX_CAP + 1, middlewares=[self.guard.middleware()])
        app.router.add_route("*", "/hooks/{id}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    def refuse(self, hook: LiveHook | None, hook_id: str, status: int, reason: str, source: str,
               answer: str, delivery_id: str | None = None) -> web.Response:
        self.counts[str(status)] = self.counts.get(str(status), 0) + 1
        if hook is not None:
            hook.refused += 1
            hook.record(f"refused: {reason}", status, delivery_id)
        self.logs.refused(hook_id, hook is not None, reason, status, source)
        resp = _body(status, error=answer)
        if status == 405:
            resp.headers["Allow"] = "POST"
        return resp

    async def not_found(self, request: web.Request) -> web.Response:
        return self.refuse(None, "-", 404, f"no such path {request.path[:100]!r}", request.remote or "?",
                           "not found")

    async def handle(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["id"]
        if not hook_id.isprintable():  # a %0A in the URL must not forge log lines
            hook_id = "".join(c if c.isprintable() else "?" for c in hook_id)
        source = request.remote or "?"
        hook = self.hooks.get(hook_id)
        if request.method != "POST":
            return self.refuse(hook, hook_id[:64], 405, f"method {request.method[:16]}", source, "method not allowed")
        if hook is None:
            return self.refuse(None, hook_id[:64], 404, "unknown hook", source, "not found")
        if not self.per_source.take(source):
            return self.refuse(hook, hook_id, 429, f"rate limit for {source}", source, "too many requests")
        if not self.per_hook.take(hook_id):
            return self.refuse(hook, hook_id, 429, "rate limit for the hook", source, "too many requests")
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            return self.refuse(hook, hook_id, 413, f"body of {declared} bytes", source, "payload too large")
        try:
            body = await self._read(request, declared)
        except (ConnectionError, ClientError, EofStream, HttpProcessingError, TimeoutError):
            # the sender went away mid-body (or was closed for being too slow): nobody is left to answer
            return self.refuse(hook, hook_id, 400, "connection closed before the body was complete", source,
                               "incomplete body")
        if body is None:
            return self.refuse(hook, hook_id, 413, f"body over {self.max_body} bytes", source, "payload too large")
        verdict = hook.verify(hook.key, request.headers, body, time.time())
        if not verdict.ok:
            return self.refuse(hook, hook_id, 401, verdict.reason, source, "unauthorized", verdict.delivery_id)
        try:
            payload = _payload(body, request.headers.get("Content-Type", ""))
        except ValueError as exc:
            return self.refuse(hook, hook_id, 400, f"malformed payload: {exc}", source, "malformed payload",
                               verdict.delivery_id)
        delivery_id = verdict.delivery_id
        if delivery_id is not None:
            if len(delivery_id) > 200:
                return self.refuse(hook, hook_id, 400, "delivery id over 200 characters", source, "malformed",
                                   None)
            if not self.deliveries.first_time(hook_id, delivery_id):
                hook.duplicates += 1
                hook.record("duplicate", 200, delivery_id)
                self.counts["duplicate"] = self.counts.get("duplicate", 0) + 1
                log.info("webhook %s: delivery %s already received; answered 200, published nothing", hook_id,
                         delivery_id, extra={"HOOK": hook_id})
                return _body(200, duplicate=True, delivery_id=delivery_id)
        else:
            delivery_id = "wh-" + secrets.token_hex(8)
        header = EVENT_HEADER.get(hook.kind)
        event = request.headers.get(header) if header else (payload.get("type") if isinstance(payload, dict)
                                                             else None)
        if hook.events is not None and event not in hook.events:
            hook.record(f"ignored event {event}", 202, delivery_id)
            return _body(202, accepted=False, ignored=f"event {event}", delivery_id=delivery_id)
        data = {"hook_id": hook_id, "kind": hook.kind, "delivery_id": delivery_id, "event": event,
                "payload": payload, "headers": {k: v for k in KEEP_HEADERS if (v := request.headers.get(k))},
                "received": utc_now(), "origin": {"webhook": hook_id, "delivery_id": delivery_id}}
        self.publish(f"webhook.{hook_id}", hook.project, data, "webhook")
        if hook.kind in EVENT_HEADER:
            self.publish(f"webhook.{hook.kind}", hook.project, data, "webhook")
        hook.accepted += 1
        hook.record("accepted", 202, delivery_id)
        self.counts["accepted"] = self.counts.get("accepted", 0) + 1
        return _body(202, accepted=True, delivery_id=delivery_id)


    async def _read(self, request: web.Request, declared: int | None) -> bytes | None:
        """The raw body, or None past the cap (a chunked body has no length to check up front)."""
        if declared is not None:
            return await request.read()
        chunks, n = [], 0
        async for chunk in request.content.iter_chunked(65536):
            n += len(chunk)
            if n > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def _payload(body: bytes, content_type: str) -> Any:
    """JSON (or GitHub's form encoding, ``payload=<json>``); an empty body is ``{}``."""
    if not body.strip():
        return {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qs(body.decode(), strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError("not valid form data") from exc
        if "payload" not in form:
            raise ValueError("form data without a payload field")
        body = form["payload"][0].encode()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not valid JSON") from exc
