"""A local Discord: the REST routes our bridge and discord.py use, and a real gateway websocket.

REST answers carry exactly ``Content-Type: application/json`` (discord.py parses JSON only on that exact
value). The gateway speaks v10 JSON: HELLO, IDENTIFY -> READY, heartbeats -> HEARTBEAT_ACK, dispatches
with sequence numbers, and RESUME after a dropped connection, replaying what the client missed (and, if
``resume_overlap`` is set, that many events it had already seen, as an at-least-once server may).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from aiohttp import WSMsgType, web
from fake_server import ThreadedServer

TOKEN = "discord-test-token"
BOT_ID, APP_ID, GUILD_ID = "1000", "2000", "3000"
TS = "2026-01-01T00:00:00.000000+00:00"


def user(uid: str, name: str, bot: bool = False) -> dict[str, Any]:
    return {"id": uid, "username": name, "discriminator": "0", "avatar": None, "global_name": name, "bot": bot,
            "public_flags": 0}


class FakeDiscord(ThreadedServer):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = {TOKEN}
        self._ids = itertools.count(5000)
        self.events: list[dict[str, Any]] = []  # the session's dispatches, with "s"
        self.seq = 0
        self.session_id = "sess-1"
        self.identifies = 0
        self.resumes: list[int] = []
        self.heartbeats = 0
        self.connections = 0
        self.delivered_seq = 0  # highest seq written to the current socket
        self.resume_overlap = 0
        self.messages: list[dict[str, Any]] = []  # POST /channels/{id}/messages
        self.edits: list[dict[str, Any]] = []  # PATCH /channels/{id}/messages/{id}
        self.callbacks: list[dict[str, Any]] = []  # interaction callbacks
        self.followups: list[dict[str, Any]] = []  # webhook edits and posts, with "kind"
        self.commands: list[dict[str, Any]] = []
        self.rate_limit_next = 0  # answer this many channel messages with 429 (retry_after 0.5 s), as Discord does
        self.rate_limited: list[float] = []  # when each 429 was given (loop time)
        self.expired_tokens: set[str] = set()  # interaction tokens past their 15 minutes
        self._ws: web.WebSocketResponse | None = None
        self._wake: asyncio.Event | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{path:.*}", self.rest)
        app.router.add_get("/gw", self.gateway)
        self._wake = asyncio.Event()
        return app

    @property
    def api(self) -> str:
        return self.base + "/api/v10"

    # -- test side -----------------------------------------------------------------------------------------
    def _dispatch(self, t: str, d: dict[str, Any]) -> None:
        with self.lock:
            self.seq += 1
            self.events.append({"op": 0, "t": t, "s": self.seq, "d": d})
        self.soon(self._kick)

    def _kick(self) -> None:
        assert self._wake is not None
        self._wake.set()

    def push_slash(self, uid: str, name: str, *values: str, channel: str = "4000", dm: bool = True) -> str:
        iid = str(next(self._ids))
        names = {"ask": ["question"], "cancel": ["id"], "approve": ["id"], "reject": ["id", "reason"]}.get(name, [])
        d: dict[str, Any] = {
            "id": iid, "application_id": APP_ID, "type": 2, "token": f"itoken-{iid}", "version": 1,
            "data": {"id": "9", "name": name, "type": 1,
                     "options": [{"name": n, "type": 3, "value": v} for n, v in zip(names, values, strict=False)]},
            "channel_id": channel, "channel": {"id": channel, "type": 1 if dm else 0},
            "locale": "en-US", "app_permissions": "0", "attachment_size_limit": 8388608, "entitlements": [],
            "authorizing_integration_owners": {}, "context": 1 if dm else 0,
        }
        if dm:
            d["user"] = user(uid, "user" + uid)
        else:
            d["guild_id"] = GUILD_ID
            d["member"] = {"user": user(uid, "user" + uid), "roles": [], "joined_at": TS, "deaf": False,
                           "mute": False, "flags": 0, "permissions": "0"}
        self._dispatch("INTERACTION_CREATE", d)
        return iid

    def push_component(self, uid: str, custom_id: str, channel: str = "4242") -> str:
        """A button click on one of the bot's messages (a component interaction, type 3)."""
        iid = str(next(self._ids))
        self._dispatch("INTERACTION_CREATE", {
            "id": iid, "application_id": APP_ID, "type": 3, "token": f"itoken-{iid}", "version": 1,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel, "channel": {"id": channel, "type": 1}, "user": user(uid, "user" + uid),
            "message": self._message(channel, {"content": "prompt"}),
            "locale": "en-US", "app_permissions": "0", "attachment_size_limit": 8388608, "entitlements": [],
            "authorizing_integration_owners": {}, "context": 1,
        })
        return iid

    def push_message(self, uid: str, content: str, channel: str = "4001", mention: bool = False,
                     guild: bool = False) -> str:
        mid = str(next(self._ids))
        d: dict[str, Any] = {
            "id": mid, "channel_id": channel, "type": 0, "author": user(uid, "user" + uid),
            "content": (f"<@{BOT_ID}> " if mention else "") + content, "timestamp": TS, "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [user(BOT_ID, "aiwg", True)] if mention else [],
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "flags": 0, "components": [],
        }
        if guild:
            d["guild_id"] = GUILD_ID
        self._dispatch("MESSAGE_CREATE", d)
        return mid

    def expire_interactions(self) -> None:
        """Every interaction token given so far is past its 15 minutes: responses through it get 401."""
        with self.lock:
            self.expired_tokens |= {c["token"] for c in self.callbacks}

    def drop(self) -> None:
        self.soon(lambda: asyncio.ensure_future(self._close_ws()))

    async def _close_ws(self) -> None:
        if self._ws is not None:
            await self._ws.close(code=4000, message=b"dropped by the fake")

    def replies(self) -> list[str]:
        """Every text the bot sent: channel messages and interaction responses."""
        with self.lock:
            out = []
            for m in self.messages + self.followups:
                out.append(m.get("content") or "")
                out.extend(e.get("description", "") for e in m.get("embeds") or [])
            return out

    # -- REST -------------------------------------------------------------------------------------------
    @staticmethod
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(data).encode(), status=status,
                            headers={"Content-Type": "application/json"})

    def _message(self, channel: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": str(next(self._ids)), "channel_id": channel, "type": 0, "author": user(BOT_ID, "aiwg", True),
                "content": body.get("content", ""), "timestamp": TS, "edited_timestamp": None, "tts": False,
                "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                "embeds": body.get("embeds", []), "pinned": False, "flags": 0, "components": body.get("components", [])}

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        if len(body.get("content") or "") > 2000:
            return "content: Must be 2000 or fewer in length."
        for e in body.get("embeds") or []:
            if len(e.get("description", "")) > 4096 or len(e.get("title", "")) > 256:
                return "embeds: too long"
        if not body.get("content") and not body.get("embeds"):
            return "Cannot send an empty message"
        return None

    async def rest(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if not path.startswith(("interactions/", "webhooks/")) and \
                request.headers.get("Authorization") not in {f"Bot {t}" for t in self.tokens}:
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        body = await request.json() if request.can_read_body else {}
        m = request.method
        if m == "GET" and path == "users/@me":
            return self._json(user(BOT_ID, "aiwg", True) | {"flags": 0, "verified": True, "mfa_enabled": False})
        if m == "GET" and path == "oauth2/applications/@me":
            return self._json({"id": APP_ID, "name": "aiwg", "icon": None, "description": "", "bot_public": True,
                               "bot_require_code_grant": False, "owner": user("1", "owner"), "verify_key": "00",
                               "flags": 0, "team": None, "interactions_endpoint_url": None})
        if m == "GET" and path == "gateway/bot":
            return self._json({"url": f"ws://127.0.0.1:{self.port}/gw", "shards": 1,
                               "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                       "max_concurrency": 1}})
        if m == "PUT" and path == f"applications/{APP_ID}/commands":
            with self.lock:
                self.commands = body
            return self._json([{**c, "id": str(next(self._ids)), "application_id": APP_ID, "version": "1"}
                               for c in body])
        parts = path.split("/")
        if m == "POST" and len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages":
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                self.rate_limited.append(asyncio.get_running_loop().time())
                return web.json_response(
                    {"message": "You are being rate limited.", "retry_after": 0.5, "global": False}, status=429,
                    headers={"Retry-After": "0.5", "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset-After": "0.5", "X-RateLimit-Bucket": "chan",
                             "X-RateLimit-Scope": "user"})
            problem = self._invalid(body)
            if problem:
                return self._json({"message": "Invalid Form Body", "code": 50035, "errors": problem}, 400)
            msg = self._message(parts[1], body)
            with self.lock:
                self.messages.append(msg)
            return self._json(msg)
        if m == "PATCH" and len(parts) == 4 and parts[0] == "channels" and parts[2] == "messages":
            with self.lock:
                old = next((x for x in self.messages if x["id"] == parts[3] and x["channel_id"] == parts[1]), None)
                if old is None:
                    return self._json({"message": "Unknown Message", "code": 10008}, 404)
                old.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
                self.edits.append({"id": parts[3], **body})
            return self._json(old)
        if m == "POST" and len(parts) == 4 and parts[0] == "interactions" and parts[3] == "callback":
            with self.lock:
                self.callbacks.append({"id": parts[1], "token": parts[2], **body})
            return web.Response(status=204)
        if parts[0] == "webhooks" and len(parts) >= 3:
            if parts[2] in self.expired_tokens:
                return self._json({"message": "Invalid Webhook Token", "code": 50027}, 401)
            problem = self._invalid(body)
            if problem:
                return self._json({"message": "Invalid Form Body", "code": 50035, "errors": problem}, 400)
            kind = {"PATCH": "edit", "DELETE": "delete"}.get(m, "followup")
            msg = self._message("0", body)
            with self.lock:
                self.followups.append({**body, "kind": kind, "token": parts[2]})
            return self._json(msg)
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    # -- gateway ----------------------------------------------------------------------------------------
    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        assert self._wake is not None
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._ws = ws
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        ready = asyncio.Event()
        reader = asyncio.ensure_future(self._read(ws, ready))
        try:
            await asyncio.wait({reader, asyncio.ensure_future(ready.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
            while not ws.closed and not reader.done():
                with self.lock:
                    pending = [e for e in self.events if e["s"] > self.delivered_seq]
                for e in pending:
                    await ws.send_json(e)
                    self.delivered_seq = e["s"]
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            reader.cancel()
            if self._ws is ws:
                self._ws = None
        return ws

    async def _read(self, ws: web.WebSocketResponse, ready: asyncio.Event) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op = data.get("op")
            if op == 1:
                self.heartbeats += 1
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif op == 2:
                if data["d"].get("token") not in self.tokens:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    return
                self.identifies += 1
                with self.lock:
                    self.session_id = f"sess-{self.identifies}"
                    self.seq += 1
                    self.delivered_seq = self.seq
                    s = self.seq
                await ws.send_json({"op": 0, "t": "READY", "s": s, "d": {
                    "v": 10, "user": user(BOT_ID, "aiwg", True) | {"flags": 0, "verified": True},
                    "guilds": [], "session_id": self.session_id, "session_type": "normal",
                    "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gw",
                    "application": {"id": APP_ID, "flags": 0}, "private_channels": []}})
                ready.set()
            elif op == 6:
                d = data["d"]
                if d.get("session_id") != self.session_id or d.get("token") not in self.tokens:
                    await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
                    continue
                seq = int(d.get("seq") or 0)
                self.resumes.append(seq)
                with self.lock:
                    self.delivered_seq = max(0, seq - self.resume_overlap)
                    self.seq += 1
                    self.events.append({"op": 0, "t": "RESUMED", "s": self.seq, "d": {}})
                ready.set()
                self._kick()
