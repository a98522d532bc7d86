"""Telegram over the Bot API directly (aiohttp): getMe, deleteWebhook, getUpdates, sendMessage,
editMessageText, answerCallbackQuery. No public URL needed: long polling.

The update offset lives in ``messaging.db`` and is written in the same transaction as each command it
confirms, so a restart neither loses nor repeats a command. Telegram forgets an update only when a later
getUpdates asks for a higher offset, so a poll cut short by a restart is simply asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from . import format as fmt
from .bridge import Bridge
from .model import Inbound, OutMessage, SendError

log = logging.getLogger("aiwg.messaging")
OUTCOME = "\n\n→ "  # what a decided approval prompt says below its text


class ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {description}")
        self.status, self.description, self.retry_after = status, description, retry_after


class TelegramBridge(Bridge):
    name = "telegram"

    def __init__(self, cfg: Any, env: Any, host: Any) -> None:
        super().__init__(cfg, env, host)
        self.token = ""
        self.chat_id = ""
        self.session: aiohttp.ClientSession | None = None
        self.username = ""

    def has_default_target(self) -> bool:
        return bool(self.chat_id)

    def _url(self, method: str) -> str:
        return f"{self.cfg.api_base_url.rstrip('/')}/bot{self.token}/{method}"

    async def start(self) -> None:
        self.token = self.secret(self.cfg.token_env)
        self.chat_id = (self.cfg.chat_id or self.secret(self.cfg.chat_id_env)).strip()
        if not self.token:
            self.disable(f"${self.cfg.token_env} is unset or empty")
            return
        self.state.enabled = True
        self.state.inbound = True
        self.state.state = "connecting"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10))
        self.spawn(self._run())

    async def stop(self) -> None:
        await super().stop()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def call(self, method: str, payload: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        assert self.session is not None
        try:
            async with self.session.post(self._url(method), json=payload or {},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    raise ApiError(resp.status, f"unreadable answer (HTTP {resp.status})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # the token is part of every URL: keep it out of errors, logs and status
            text = f"{type(exc).__name__}: {exc}".rstrip(": ").replace(self.token, "<token>")
            raise ApiError(0, text) from None
        if not isinstance(body, dict):
            raise ApiError(resp.status, "unreadable answer")
        if not body.get("ok"):
            params = body.get("parameters") or {}
            raise ApiError(int(body.get("error_code") or resp.status), str(body.get("description") or "error"),
                           params.get("retry_after"))
        return body.get("result")

    # -- inbound: the long-poll loop -------------------------------------------------------------------
    async def _run(self) -> None:
        offset = self.host.store.offset(self.name)
        webhook_cleared = False
        verified = False  # getMe answered since the last failure
        while True:
            try:
                if not verified:
                    me = await self.call("getMe")
                    self.username = str((me or {}).get("username") or "")
                    if not webhook_cleared:
                        await self.call("deleteWebhook", {"drop_pending_updates": False})
                        webhook_cleared = True
                    verified = True
                    self.connected(f"long polling as @{self.username}")
                timeout = self.cfg.poll_timeout_seconds
                payload: dict[str, Any] = {"timeout": timeout, "allowed_updates": ["message", "callback_query"]}
                if offset is not None:
                    payload["offset"] = offset
                # the HTTP timeout outlasts the poll timeout, so an idle poll ends on Telegram's side
                updates = await self.call("getUpdates", payload, timeout=timeout + 15)
                self.connected(f"long polling as @{self.username}")
                if not isinstance(updates, list):
                    log.warning("messaging: telegram getUpdates answered %r; ignored", type(updates).__name__)
                    continue
                for upd in updates:
                    offset = self._take(upd, offset)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                verified = False
                if exc.status == 401 or (exc.status == 404 and "Not Found" in exc.description):
                    self.state.state = "error"
                    self.state.detail = "token rejected (401 Unauthorized): revoked or wrong; not retrying"
                    self.state.error(exc.description)
                    log.error("messaging: telegram token rejected (%s); the bridge stops. Fix $%s and reload.",
                              exc.status, self.cfg.token_env)
                    return
                if exc.status == 409:
                    self.state.state = "error"
                    self.state.detail = "another poller uses this token (409 Conflict); retrying"
                    log.warning("messaging: telegram: %s: another getUpdates poller or a webhook uses this token",
                                exc.description)
                else:
                    self.state.state = "connecting"
                    self.state.detail = f"reconnecting after: {exc}"
                self.state.error(str(exc))
                self.state.reconnects += 1
                delay = exc.retry_after if exc.retry_after else self.retry_delay(unreachable=exc.status == 0)
                await asyncio.sleep(min(float(delay), 300.0))

    def _take(self, upd: Any, offset: int | None) -> int | None:
        """One update: record a command (and the new offset) or just move past anything else."""
        if not isinstance(upd, dict) or not isinstance(upd.get("update_id"), int):
            log.warning("messaging: telegram sent a malformed update (%.200r); skipped", upd)
            return offset
        uid = upd["update_id"]
        nxt = max(offset or 0, uid + 1)
        inbound = None
        try:
            inbound = self._inbound(upd)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("messaging: telegram update %s is malformed (%s); skipped", uid, exc)
        if inbound is None:
            self.host.store.set_offset(self.name, nxt)
        else:
            self.host.receive(self, inbound, offset=nxt)
        return nxt

    def _inbound(self, upd: dict[str, Any]) -> Inbound | None:
        key = str(upd["update_id"])
        if "callback_query" in upd:
            cq = upd["callback_query"]
            action, _, value = str(cq.get("data") or "").partition(":")
            verb = {"a": "approve", "r": "reject"}.get(action)
            if verb is None or not value:
                self.spawn(self._answer_callback(cq["id"], ""))
                return None
            prompt = cq.get("message") or {}
            chat = prompt.get("chat") or {}
            sender = cq["from"]
            chat_id = str(chat.get("id", sender["id"]))
            answered = [False]  # Telegram takes one answer per press: the outcome, or a refusal as an alert

            async def private(msg: OutMessage) -> None:
                if not answered[0]:
                    answered[0] = True
                    await self._answer_callback(cq["id"], msg.text, alert=True)

            responder = None
            if isinstance(prompt.get("message_id"), int):
                responder = self._decision_responder(chat_id, prompt["message_id"], str(prompt.get("text") or ""),
                                                     cq["id"], answered)
            return Inbound("telegram", str(int(sender["id"])), chat_id, f"/{verb} {value}",
                           key, str(sender.get("username") or ""), responder=responder, private_reply=private)
        msg = upd.get("message")
        if not isinstance(msg, dict):
            return None
        text = msg.get("text")
        sender = msg.get("from")
        if not isinstance(text, str) or not isinstance(sender, dict):
            return None
        if not text.startswith("/"):  # a plain message: a question in a private chat (as on Slack, Discord)
            private = (msg.get("chat") or {}).get("type") == "private"
            command = self.host.command_of(text, private)
            if command is None:
                return None
            text = command
        word = text.split(maxsplit=1)[0]
        if "@" in word and self.username and word.split("@", 1)[1].lower() != self.username.lower():
            return None  # a command for another bot in a group
        return Inbound("telegram", str(int(sender["id"])), str(int(msg["chat"]["id"])), text, key,
                       str(sender.get("username") or ""))

    def _decision_responder(self, chat_id: str, message_id: int, prompt_text: str, callback_id: str,
                            answered: list[bool]) -> Any:
        """A button's answer goes to the chat, and the prompt itself shows the outcome, its buttons gone."""

        async def respond(msg: OutMessage) -> None:
            if not answered[0]:
                answered[0] = True
                await self._answer_callback(callback_id, "Received")
            await self.send(msg, chat_id)  # the prompt itself is updated by the decision's event, everywhere

        return respond

    async def _answer_callback(self, callback_id: str, text: str, alert: bool = False) -> None:
        """Stop the button's spinner; with ``alert``, the text shows to the presser only, as a dialog."""
        with contextlib.suppress(ApiError):
            await self.call("answerCallbackQuery", {"callback_query_id": callback_id, "text": text[:200],
                                                    "show_alert": alert})

    # -- outbound --------------------------------------------------------------------------------------
    async def send(self, msg: OutMessage, target: str | None = None) -> str | None:
        chat = target or self.chat_id
        if not chat:
            raise SendError("no chat id: set $" + self.cfg.chat_id_env, permanent=True)
        if self.session is None:
            raise SendError("the telegram bridge is not running")
        try:
            body = fmt.telegram(msg)
        except ValueError as exc:  # an approval id too long for a button: send it without buttons
            log.warning("messaging: %s", exc)
            msg = OutMessage(msg.text, msg.title, msg.severity, [], msg.reply)
            body = fmt.telegram(msg)
        for attempt in range(3):
            try:
                sent = await self.call("sendMessage", {"chat_id": chat, **body})
                self.state.messages_out += 1
                mid = sent.get("message_id") if isinstance(sent, dict) else None
                return f"{chat}:{mid}" if isinstance(mid, int) else None
            except ApiError as exc:
                if exc.status == 429 and exc.retry_after is not None and attempt < 2:
                    await asyncio.sleep(min(float(exc.retry_after), 30.0))
                    continue
                if exc.status == 400 and ("parse entities" in exc.description or "BUTTON_DATA_INVALID"
                                          in exc.description) and body.get("parse_mode"):
                    log.warning("messaging: telegram refused the formatted message (%s); sending plain text",
                                exc.description)
                    body = fmt.telegram_plain(msg)
                    continue
                # 401: the token, not this message, is bad: it waits in the outbox for the fixed token
                raise SendError(f"telegram sendMessage: {exc}", permanent=exc.status in (400, 403),
                                retry_after=exc.retry_after) from None
        raise SendError("telegram sendMessage: still rate-limited after retries")

    async def close_prompt(self, ref: str, msg: OutMessage, outcome: str) -> None:
        chat_id, _, mid = ref.rpartition(":")
        shown = OutMessage(fmt.cut(f"{msg.text}{OUTCOME}{outcome}", fmt.TELEGRAM_TEXT - 200), msg.title,
                           msg.severity, [], msg.reply)
        body = fmt.telegram(shown)
        try:
            await self.call("editMessageText", {"chat_id": chat_id, "message_id": int(mid), **body,
                                                "reply_markup": {"inline_keyboard": []}})
        except ApiError as exc:
            if "message is not modified" not in exc.description:
                raise SendError(f"telegram editMessageText: {exc}") from None
