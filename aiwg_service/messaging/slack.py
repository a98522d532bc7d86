"""Slack: outbound by incoming webhook or ``chat.postMessage``; inbound over Socket Mode (no public URL).

Inbound needs an app-level ``xapp-`` token (Socket Mode) and a ``xoxb-`` bot token (replies). slack_sdk's
async Socket Mode client keeps the websocket (its own pings, reconnect on ``disconnect`` or a drop); we
ack each envelope first, then work. Slack re-sends an envelope that was not acked in time, and the Events
API retries an event with the same ``event_id``: the inbox key is the event id when there is one, else
the envelope id, so a retry never runs a command twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp

from . import format as fmt
from .bridge import Bridge
from .model import Inbound, OutMessage, SendError

log = logging.getLogger("aiwg.messaging")
PERMANENT = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
             "channel_not_found", "not_in_channel", "is_archived", "missing_scope", "no_service", "invalid_token",
             "no_text", "invalid_blocks", "msg_too_long"}
_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>\s*")
#: one slash command for everything (``/aiwg status``) or each command on its own (``/status``)
UMBRELLA = {"/aiwg"}


class SlackBridge(Bridge):
    name = "slack"

    def __init__(self, cfg: Any, env: Any, host: Any) -> None:
        super().__init__(cfg, env, host)
        self.webhook_url = ""
        self.bot_token = ""
        self.app_token = ""
        self.channel = ""
        self.web: Any = None
        self.socket: Any = None
        self.http: aiohttp.ClientSession | None = None
        self.bot_user = ""

    def has_default_target(self) -> bool:
        return bool(self.webhook_url or (self.bot_token and self.channel))

    async def start(self) -> None:
        self.webhook_url = self.secret(self.cfg.webhook_url_env)
        self.bot_token = self.secret(self.cfg.bot_token_env)
        self.app_token = self.secret(self.cfg.app_token_env)
        self.channel = (self.cfg.channel or self.secret(self.cfg.channel_env)).strip()
        if not (self.webhook_url or self.bot_token):
            self.disable(f"${self.cfg.webhook_url_env} and ${self.cfg.bot_token_env} are unset or empty")
            return
        self.state.enabled = True
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        if self.bot_token and self.app_token:
            self.state.inbound = True
            self.state.state = "connecting"
            self.spawn(self._run())
        else:
            self.state.state = "sending-only"
            self.state.detail = ("incoming webhook" if self.webhook_url else "chat.postMessage") + (
                f"; no inbound: ${self.cfg.app_token_env} is unset" if self.bot_token else
                f"; no inbound: ${self.cfg.bot_token_env} and ${self.cfg.app_token_env} are unset")

    def _base(self) -> str:
        return self.cfg.api_base_url.rstrip("/") + "/"

    async def stop(self) -> None:
        if self.socket is not None:
            try:
                await asyncio.wait_for(self.socket.close(), 5)
            except Exception as exc:
                log.debug("slack: closing the socket: %s", exc)
            self.socket = None
        await super().stop()
        if self.http is not None:
            await self.http.close()
            self.http = None

    # -- inbound -----------------------------------------------------------------------------------------
    async def _web(self) -> Any:
        """The bot-token Web API client, built on first use (slack_sdk is imported off the loop)."""
        if self.web is None:
            await self.load("slack_sdk.web.async_client", "slack_sdk.socket_mode.aiohttp")
            from slack_sdk.web.async_client import AsyncWebClient

            if self.web is None:
                self.web = AsyncWebClient(token=self.bot_token, base_url=self._base(), session=self.http)
        return self.web

    async def _run(self) -> None:
        await self._web()
        from slack_sdk.errors import SlackApiError
        from slack_sdk.socket_mode.aiohttp import SocketModeClient
        from slack_sdk.web.async_client import AsyncWebClient

        app_web = AsyncWebClient(token=self.app_token, base_url=self._base(), session=self.http)
        while True:
            unreachable = False
            try:
                who = await self.web.auth_test()
                self.bot_user = str(who.get("user_id") or "")
                client = SocketModeClient(app_token=self.app_token, web_client=app_web,
                                          ping_interval=self.cfg.ping_interval_seconds,
                                          logger=logging.getLogger("aiwg.messaging.slack_sdk"))
                client.socket_mode_request_listeners.append(self._on_request)
                client.message_listeners.append(self._on_message)
                client.on_close_listeners.append(self._on_close)
                client.wss_uri = await client.issue_new_wss_url()  # here, so a bad token surfaces at once
                self.socket = client
                await client.connect()
                self.backoff.reset()
                return  # from here on slack_sdk keeps the connection
            except asyncio.CancelledError:
                raise
            except SlackApiError as exc:
                err = str(exc.response.get("error") or exc)
                self.state.error(err)
                if err in PERMANENT:
                    self.state.state = "error"
                    self.state.detail = f"token rejected ({err}): revoked or wrong; not retrying"
                    log.error("messaging: slack refused our token (%s); inbound stops. Fix the token and reload.", err)
                    return
                self.state.state, self.state.detail = "connecting", f"reconnecting after: {err}"
            except Exception as exc:
                self.state.error(f"{type(exc).__name__}: {exc}")
                self.state.state, self.state.detail = "connecting", f"reconnecting after: {type(exc).__name__}"
                unreachable = isinstance(exc, aiohttp.ClientConnectionError | OSError | TimeoutError)
            self.state.reconnects += 1
            await asyncio.sleep(self.retry_delay(unreachable))

    async def _on_message(self, client: Any, message: dict[str, Any], raw: str | None) -> None:
        if message.get("type") == "hello":
            self.connected("socket mode")
        elif message.get("type") == "disconnect":
            self.state.state, self.state.detail = "connecting", f"slack asked to reconnect ({message.get('reason')})"
            self.state.reconnects += 1

    async def _on_close(self, client: Any, code: Any = None, reason: Any = None) -> None:
        self.state.state, self.state.detail = "connecting", "the websocket closed; reconnecting"
        self.state.reconnects += 1

    async def _on_request(self, client: Any, req: Any) -> None:
        from slack_sdk.socket_mode.response import SocketModeResponse

        try:  # ack first; if the socket is going away Slack re-sends it, and the inbox drops the copy
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        except Exception as exc:
            log.info("messaging: slack: could not ack %s (%s); working on it anyway", req.envelope_id, exc)
        try:
            inbound = self._inbound(req.type, req.payload or {}, req.envelope_id)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("messaging: slack sent a malformed %s envelope (%s); skipped", req.type, exc)
            return
        if inbound is not None:
            self.host.receive(self, inbound)

    def _inbound(self, kind: str, payload: dict[str, Any], envelope_id: str) -> Inbound | None:
        if kind == "slash_commands":
            cmd, text = str(payload["command"]).lower(), str(payload.get("text") or "").strip()
            line = "/" + text if cmd in UMBRELLA else f"{cmd} {text}".strip()
            user, channel = str(payload["user_id"]), str(payload["channel_id"])
            return Inbound("slack", user, channel, line or "/help", "env:" + envelope_id,
                           str(payload.get("user_name") or ""), private_reply=self._ephemeral(channel, user))
        if kind == "events_api":
            ev = payload["event"]
            if ev.get("bot_id") or ev.get("subtype") or (self.bot_user and ev.get("user") == self.bot_user):
                return None
            is_dm = ev.get("type") == "message" and ev.get("channel_type") == "im"
            if ev.get("type") != "app_mention" and not is_dm:
                return None
            command = self.host.command_of(_MENTION.sub("", str(ev.get("text") or "")), True)
            if command is None:
                return None
            key = "ev:" + str(payload.get("event_id") or envelope_id)
            return Inbound("slack", str(ev["user"]), str(ev["channel"]), command, key)
        if kind == "interactive" and payload.get("type") == "block_actions":
            action = payload["actions"][0]
            verb = {"aiwg_approve": "approve", "aiwg_reject": "reject"}.get(str(action.get("action_id")))
            if verb is None:
                return None
            channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id")
            user = str(payload["user"]["id"])
            return Inbound("slack", user, str(channel), f"/{verb} {action['value']}", "env:" + envelope_id,
                           str(payload["user"].get("username") or ""),
                           private_reply=self._ephemeral(str(channel), user))
        return None

    def _ephemeral(self, channel: str, user: str) -> Any:
        """An answer only ``user`` sees, in the channel they typed or pressed in (chat.postEphemeral)."""

        async def say(msg: OutMessage) -> None:
            web = await self._web()
            from slack_sdk.errors import SlackApiError

            body = fmt.slack(msg)
            try:
                await web.chat_postEphemeral(channel=channel, user=user, text=body["text"], blocks=body["blocks"])
            except SlackApiError as exc:
                raise SendError(f"slack chat.postEphemeral: {exc.response.get('error') or exc}") from None

        return say

    # -- outbound ------------------------------------------------------------------------------------------
    async def send(self, msg: OutMessage, target: str | None = None) -> str | None:
        body = fmt.slack(msg)
        channel = target or self.channel
        ref = None
        if self.bot_token and channel:
            ref = await self._post_message(channel, body)
        elif self.webhook_url and target is None:
            await self._post_webhook(body)
        else:
            raise SendError("slack: no channel for chat.postMessage and no incoming webhook", permanent=True)
        self.state.messages_out += 1
        return ref

    async def close_prompt(self, ref: str, msg: OutMessage, outcome: str) -> None:
        channel, _, ts = ref.rpartition(":")
        web = await self._web()
        from slack_sdk.errors import SlackApiError

        body = fmt.slack(OutMessage(f"{msg.text}\n→ {outcome}", msg.title, msg.severity, [], msg.reply))
        try:
            await web.chat_update(channel=channel, ts=ts, text=body["text"], blocks=body["blocks"])
        except SlackApiError as exc:
            raise SendError(f"slack chat.update: {exc.response.get('error') or exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"slack chat.update: {type(exc).__name__}: {exc}") from None

    async def _post_message(self, channel: str, body: dict[str, Any]) -> str | None:
        web = await self._web()
        from slack_sdk.errors import SlackApiError

        try:
            res = await web.chat_postMessage(channel=channel, **body)
            ts = res.get("ts")
            return f"{res.get('channel') or channel}:{ts}" if ts else None
        except SlackApiError as exc:
            err = str(exc.response.get("error") or exc)
            retry = exc.response.headers.get("Retry-After") if exc.response.status_code == 429 else None
            raise SendError(f"slack chat.postMessage: {err}", permanent=err in PERMANENT,
                            retry_after=float(retry) if retry else None) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"slack chat.postMessage: {type(exc).__name__}: {exc}") from None

    async def _post_webhook(self, body: dict[str, Any]) -> None:
        assert self.http is not None
        try:
            async with self.http.post(self.webhook_url, json=body) as resp:
                text = (await resp.text()).strip()
                if resp.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendError(f"slack webhook: {type(exc).__name__}: {exc}") from None
        raise SendError(f"slack webhook: HTTP {resp.status} {text[:100]}",
                        permanent=resp.status in (400, 403, 404, 410) or text in PERMANENT)
