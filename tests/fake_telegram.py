"""A local Telegram Bot API: the methods our bridge uses, with Telegram's real answers and refusals.

``POST|GET /bot<token>/<method>`` with JSON, form-encoded or query parameters; answers
``{"ok": true, "result": …}`` or ``{"ok": false, "error_code": N, "description": …, "parameters"?}``.
getUpdates confirms every update below ``offset`` (they are gone for good, as on Telegram) and long-polls
up to ``timeout`` seconds; a second concurrent poller ends the first with 409. sendMessage refuses text
over 4096 characters, broken HTML, callback data over 64 bytes (BUTTON_DATA_INVALID), and answers 429 with
``retry_after`` when told to.
"""

from __future__ import annotations

import asyncio
import html
import html.parser
import json
import re
from typing import Any

from aiohttp import web
from fake_server import ThreadedServer

ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "tg-spoiler",
                "blockquote", "span"}


class _HtmlCheck(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.error: str | None = None
        self.text_len = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in ALLOWED_TAGS:
            self.error = f"Unsupported start tag \"{tag}\""
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.error = f"Unexpected end tag \"{tag}\""
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text_len += len(data)


class FakeTelegram(ThreadedServer):
    def __init__(self, token: str = "123456:TEST-token") -> None:
        super().__init__()
        self.tokens = {token}
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.next_update_id = 1000
        self.confirmed = 0  # updates below this id are gone
        self.sent: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []
        self.callbacks_answered: list[str] = []
        self.callback_answers: list[dict[str, Any]] = []  # the whole answers (text, show_alert)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0
        self.poll_offsets: list[int | None] = []
        self.rate_limit_next = 0  # answer this many sendMessage calls with 429
        self.fail_sends = False  # answer sendMessage with 502 Bad Gateway (Telegram's own outage answer)
        self.conflict_next = 0  # answer this many getUpdates with 409
        self.raw_updates: list[Any] = []  # sent verbatim (malformed-update tests)
        self._waiter: asyncio.Future[None] | None = None
        self._new: asyncio.Event | None = None
        self.next_message_id = 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.handle)
        self._new = asyncio.Event()
        return app

    # -- test side ------------------------------------------------------------------------------------
    def push_message(self, user_id: int, text: str, chat_id: int | None = None, username: str = "someone") -> int:
        return self.push({"message": {"message_id": self.next_message_id, "date": 0, "text": text,
                                      "from": {"id": user_id, "is_bot": False, "first_name": username,
                                               "username": username},
                                      "chat": {"id": chat_id if chat_id is not None else user_id, "type": "private"}}})

    def push_callback(self, user_id: int, data: str, chat_id: int | None = None, message_id: int = 1) -> int:
        """A button press on the bot's message ``message_id`` (its text comes along, as on Telegram)."""
        with self.lock:
            prompt = next((m for m in self.sent if m["message_id"] == message_id), {})
        chat = chat_id or prompt.get("chat_id") or user_id
        return self.push({"callback_query": {"id": f"cb{self.next_update_id}", "data": data,
                                             "from": {"id": user_id, "is_bot": False, "first_name": "x"},
                                             "message": {"message_id": message_id, "date": 0,
                                                         "text": prompt.get("shown", ""),
                                                         "chat": {"id": chat, "type": "private"}}}})

    def push(self, update: dict[str, Any]) -> int:
        with self.lock:
            uid = self.next_update_id
            self.next_update_id += 1
            self.updates.append({"update_id": uid, **update})
        self.soon(self._notify)
        return uid

    def push_raw(self, item: Any) -> None:
        with self.lock:
            self.raw_updates.append(item)
        self.soon(self._notify)

    def _notify(self) -> None:
        assert self._new is not None
        self._new.set()

    def texts(self, chat_id: int | str | None = None) -> list[str]:
        with self.lock:
            return [m["text"] for m in self.sent if chat_id is None or str(m["chat_id"]) == str(chat_id)]

    # -- server side ----------------------------------------------------------------------------------
    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _err(code: int, description: str, **params: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if params:
            body["parameters"] = params
        return web.json_response(body, status=code)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                params.update(await request.json())
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for k, v in form.items():
                    sv = str(v)
                    if k in ("reply_markup", "allowed_updates"):
                        sv = json.loads(sv)
                    params[k] = sv
        return params

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.tokens:
            return self._err(401, "Unauthorized")
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except (ValueError, json.JSONDecodeError):
            return self._err(400, "Bad Request: can't parse request body")
        with self.lock:
            self.calls.append((method, params))
        fn = getattr(self, "m_" + method, None)
        if fn is None:
            return self._err(404, "Not Found: method not found")
        return await fn(params)

    async def m_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok({"id": 123456, "is_bot": True, "first_name": "aiwg", "username": "aiwg_test_bot"})

    async def m_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        return self._ok(True)

    async def m_getUpdates(self, params: dict[str, Any]) -> web.Response:
        assert self._new is not None
        if self.conflict_next > 0:
            self.conflict_next -= 1
            return self._err(409, "Conflict: terminated by other getUpdates request; make sure that only one bot "
                                  "instance is running")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # the earlier poller loses, as on Telegram
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = me
        offset = int(params["offset"]) if params.get("offset") not in (None, "") else None
        timeout = float(params.get("timeout") or 0)
        with self.lock:
            self.polls += 1
            self.poll_offsets.append(offset)
            if offset is not None:
                self.confirmed = max(self.confirmed, offset)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.lock:
                raw, self.raw_updates = self.raw_updates, []
                ready = [u for u in self.updates if offset is None or u["update_id"] >= offset]
            if raw or ready:
                return self._ok(raw + ready[:100])
            left = deadline - loop.time()
            if left <= 0:
                return self._ok([])
            self._new.clear()
            new = asyncio.ensure_future(self._new.wait())
            await asyncio.wait({new, me}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            new.cancel()
            if me.done():
                return self._err(409, "Conflict: terminated by other getUpdates request; make sure that only one "
                                      "bot instance is running")

    def _check_markup(self, params: dict[str, Any]) -> web.Response | None:
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                if len(str(button.get("callback_data", "")).encode()) > 64:
                    return self._err(400, "Bad Request: BUTTON_DATA_INVALID")
        return None

    def _check_text(self, text: str, parse_mode: str | None) -> web.Response | None:
        if not text.strip():
            return self._err(400, "Bad Request: message text is empty")
        length = len(text)
        if parse_mode == "HTML":
            chk = _HtmlCheck()
            chk.feed(text)
            chk.close()
            if chk.error or chk.stack:
                return self._err(400, f"Bad Request: can't parse entities: {chk.error or 'unclosed tag'}")
            length = chk.text_len
        if length > 4096:
            return self._err(400, "Bad Request: message is too long")
        return None

    async def m_sendMessage(self, params: dict[str, Any]) -> web.Response:
        if str(params.get("chat_id")) == "404":
            return self._err(400, "Bad Request: chat not found")
        if self.fail_sends:
            return self._err(502, "Bad Gateway")
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return self._err(429, "Too Many Requests: retry after 1", retry_after=1)
        if "chat_id" not in params:
            return self._err(400, "Bad Request: chat_id is empty")
        text = str(params.get("text", ""))
        refusal = self._check_text(text, params.get("parse_mode")) or self._check_markup(params)
        if refusal is not None:
            return refusal
        with self.lock:
            mid = self.next_message_id
            self.next_message_id += 1
            # what a client shows (and what comes back in a callback's message): text without the markup
            shown = html.unescape(re.sub(r"<[^>]+>", "", text)) if params.get("parse_mode") == "HTML" else text
            self.sent.append({"message_id": mid, **params, "shown": shown})
        return self._ok({"message_id": mid, "date": 0, "chat": {"id": params["chat_id"]}, "text": text})

    async def m_editMessageText(self, params: dict[str, Any]) -> web.Response:
        mid = int(params.get("message_id", 0))
        with self.lock:
            old = next((m for m in self.sent if m["message_id"] == mid), None)
            if old is None:
                return self._err(400, "Bad Request: message to edit not found")
            if old["shown"] == params.get("text") and old.get("reply_markup") == params.get("reply_markup"):
                return self._err(400, "Bad Request: message is not modified: specified new message content and "
                                      "reply markup are exactly the same as a current content and reply markup "
                                      "of the message")
            old["text"] = old["shown"] = params.get("text")
            old["reply_markup"] = params.get("reply_markup")
            self.edits.append(params)
        return self._ok({"message_id": mid, "text": params.get("text")})

    async def m_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        with self.lock:
            self.callbacks_answered.append(str(params.get("callback_query_id")))
            self.callback_answers.append(params)
        return self._ok(True)
