"""A local Slack: Web API methods, an incoming webhook, and Socket Mode over a real websocket.

- ``POST /api/auth.test``, ``/api/chat.postMessage`` (bot token), ``/api/apps.connections.open`` (app token)
  answer ``{"ok": …}`` as Slack does (errors such as ``invalid_auth`` with HTTP 200).
- ``apps.connections.open`` returns a ``ws://`` URL; the websocket sends ``hello``, then envelopes
  (slash commands, Events API, block actions) and expects an ack (``{"envelope_id"}``) for each. An envelope
  not acked on a connection is sent again on the next one with ``retry_attempt`` raised, as Slack does.
- ``drop_after_send``: close the websocket right after the next envelope leaves, losing any ack for it.
- ``POST /hooks/<path>``: an incoming webhook (``ok``; 404 ``no_service`` for an unknown path).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from aiohttp import WSMsgType, web
from fake_server import ThreadedServer

BOT_TOKEN = "xoxb-test-bot"
APP_TOKEN = "xapp-test-app"
HOOK_PATH = "/hooks/T000/B000/secret"


class FakeSlack(ThreadedServer):
    def __init__(self) -> None:
        super().__init__()
        self.bot_tokens = {BOT_TOKEN}
        self.app_tokens = {APP_TOKEN}
        self.posts: list[dict[str, Any]] = []
        self.hook_posts: list[dict[str, Any]] = []
        self.ephemeral: list[dict[str, Any]] = []  # chat.postEphemeral: seen by body["user"] only
        self.updates: list[dict[str, Any]] = []  # chat.update (a decided approval prompt)
        self.acks: list[str] = []
        self.unacked: dict[str, dict[str, Any]] = {}  # envelope id -> envelope, in send order
        self.outbox: list[dict[str, Any]] = []
        self.connections = 0
        self.drop_after_send = False
        self.rate_limit_next = 0
        self._ids = itertools.count(1)
        self._ws: web.WebSocketResponse | None = None
        self._wake: asyncio.Event | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self.api)
        app.router.add_get("/link/", self.socket)
        app.router.add_post("/hooks/{rest:.*}", self.hook)
        self._wake = asyncio.Event()
        return app

    @property
    def hook_url(self) -> str:
        return self.base + HOOK_PATH

    # -- test side ----------------------------------------------------------------------------------------
    def _envelope(self, kind: str, payload: dict[str, Any], accepts: bool) -> str:
        eid = f"env-{next(self._ids)}"
        env = {"envelope_id": eid, "type": kind, "payload": payload, "accepts_response_payload": accepts}
        if kind == "events_api":
            env.update(retry_attempt=0, retry_reason="")
        with self.lock:
            self.outbox.append(env)
        self.soon(self._kick)
        return eid

    def push_slash(self, user: str, text: str, command: str = "/aiwg", channel: str = "C100") -> str:
        return self._envelope("slash_commands", {
            "token": "verif", "team_id": "T000", "channel_id": channel, "user_id": user, "user_name": "name-" + user,
            "command": command, "text": text, "response_url": self.base + "/response", "trigger_id": "t.1"}, True)

    def push_mention(self, user: str, text: str, channel: str = "C100") -> str:
        n = next(self._ids)
        return self._envelope("events_api", {
            "type": "event_callback", "team_id": "T000", "event_id": f"Ev{n}", "event_time": 1,
            "event": {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "channel": channel,
                      "ts": f"{n}.000"}}, False)

    def push_dm(self, user: str, text: str, channel: str = "D100") -> str:
        n = next(self._ids)
        return self._envelope("events_api", {
            "type": "event_callback", "team_id": "T000", "event_id": f"Ev{n}", "event_time": 1,
            "event": {"type": "message", "channel_type": "im", "user": user, "text": text, "channel": channel,
                      "ts": f"{n}.000"}}, False)

    def push_button(self, user: str, action: str, value: str, channel: str = "C100") -> str:
        return self._envelope("interactive", {
            "type": "block_actions", "user": {"id": user, "username": "name-" + user}, "channel": {"id": channel},
            "container": {"type": "message", "channel_id": channel},
            "actions": [{"action_id": f"aiwg_{action}", "value": value, "type": "button"}]}, False)

    def texts(self, channel: str | None = None) -> list[str]:
        with self.lock:
            return [str(p.get("text", "")) for p in self.posts if channel is None or p.get("channel") == channel]

    def drop(self) -> None:
        self.soon(lambda: asyncio.ensure_future(self._close_ws()))

    async def _close_ws(self) -> None:
        if self._ws is not None:
            await self._ws.close(code=1011, message=b"dropped by the fake")

    def _kick(self) -> None:
        assert self._wake is not None
        self._wake.set()

    # -- server side --------------------------------------------------------------------------------------
    @staticmethod
    def _bearer(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        out: dict[str, Any] = {}
        for k, v in form.items():
            out[k] = json.loads(str(v)) if k in ("blocks", "attachments") else str(v)
        return out

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token = self._bearer(request)
        body = await self._body(request)
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={next(self._ids)}"})
        if token not in self.bot_tokens:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "url": "https://fake.slack/", "team": "T", "user": "aiwg",
                                      "team_id": "T000", "user_id": "UBOT", "bot_id": "B000"})
        if method == "chat.update":
            with self.lock:
                i = int(str(body.get("ts", "0")).split(".")[0]) - 1
                if not 0 <= i < len(self.posts) or self.posts[i].get("channel") != body.get("channel"):
                    return web.json_response({"ok": False, "error": "message_not_found"})
                self.posts[i] = {**self.posts[i], **body}
                self.updates.append(body)
            return web.json_response({"ok": True, "channel": body["channel"], "ts": body["ts"]})
        if method == "chat.postEphemeral":
            if not body.get("channel") or not body.get("user"):
                return web.json_response({"ok": False, "error": "channel_not_found"})
            with self.lock:
                self.ephemeral.append(body)
            return web.json_response({"ok": True, "message_ts": f"{len(self.ephemeral)}.0002"})
        if method == "chat.postMessage":
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": "1"})
            if not body.get("channel"):
                return web.json_response({"ok": False, "error": "channel_not_found"})
            if not body.get("text") and not body.get("blocks"):
                return web.json_response({"ok": False, "error": "no_text"})
            for block in body.get("blocks") or []:
                if block.get("type") == "section" and len(block["text"]["text"]) > 3000:
                    return web.json_response({"ok": False, "error": "invalid_blocks"})
            with self.lock:
                self.posts.append(body)
                ts = f"{len(self.posts)}.0001"
            return web.json_response({"ok": True, "channel": body["channel"], "ts": ts, "message": {"text":
                                                                                                     body.get("text")}})
        return web.json_response({"ok": False, "error": "unknown_method"})

    async def hook(self, request: web.Request) -> web.Response:
        if request.path != HOOK_PATH:
            return web.Response(status=404, text="no_service")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not body.get("text") and not body.get("blocks"):
            return web.Response(status=400, text="no_text")
        with self.lock:
            self.hook_posts.append(body)
        return web.Response(text="ok")

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        assert self._wake is not None
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self.lock:
            self.connections += 1
            # what the last connection left unacked goes first, marked as a retry
            retry = list(self.unacked.values())
            self.unacked.clear()
            for env in retry:
                if "retry_attempt" in env:
                    env["retry_attempt"] += 1
                    env["retry_reason"] = "timeout"
            self.outbox[:0] = retry
        self._ws = ws
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                            "connection_info": {"app_id": "A000"}})
        reader = asyncio.ensure_future(self._read(ws))
        try:
            while not ws.closed:
                with self.lock:
                    env = self.outbox.pop(0) if self.outbox else None
                if env is None:
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if reader.done():
                        break
                    continue
                with self.lock:
                    self.unacked[env["envelope_id"]] = env
                await ws.send_json(env)
                if self.drop_after_send:
                    self.drop_after_send = False
                    await ws.close(code=1011, message=b"dropped by the fake")
                    with self.lock:  # the drop loses any ack in flight: Slack will send it again
                        self.unacked[env["envelope_id"]] = env
                    break
        finally:
            reader.cancel()
            if self._ws is ws:
                self._ws = None
        return ws

    async def _read(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            eid = data.get("envelope_id")
            if eid:
                with self.lock:
                    self.acks.append(eid)
                    self.unacked.pop(eid, None)
