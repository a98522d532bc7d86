"""Discord over the gateway with discord.py: slash commands, DMs and @mentions in; channel messages out.

Commands come as slash commands (registered at start), in DMs, or in messages that @mention the bot:
Discord delivers the content of exactly those without the privileged MESSAGE_CONTENT intent, so the bot
needs no special approval. discord.py keeps the gateway (heartbeats, RESUME after a drop); its reconnect
delay is ours (``Bridge.retry_delay``: capped, reset by each READY or RESUMED), not its own, which grows
across outages and resets only after 34 minutes. REST calls go through its HTTP client (auth, rate-limit
buckets, 429 handling). An answer to a slash command goes through the interaction's token while it is
valid (15 minutes); a later answer, or one the token no longer takes, is posted to the channel.

``api_base_url`` sets discord.py's REST base (``discord.http.Route.BASE``, a class attribute: one
Discord bridge per process, which the service is). The gateway URL comes from ``GET /gateway/bot``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from . import format as fmt
from .bridge import Bridge
from .commands import COMMANDS
from .model import Inbound, OutMessage, SendError

log = logging.getLogger("aiwg.messaging")
_MENTION = re.compile(r"<@!?\d+>\s*")
#: an interaction token is valid for 15 minutes; past this, answers go to the channel instead
INTERACTION_TOKEN_S = 14 * 60
#: slash-command options, in order: what each command takes
OPTIONS = {"ask": [("question", True)], "cancel": [("id", True)], "approve": [("id", True)],
           "reject": [("id", True), ("reason", False)]}


def command_payload() -> list[dict[str, Any]]:
    """The application commands we register (PUT /applications/{id}/commands overwrites them all)."""
    out = []
    for name, (_perm, _usage, what) in COMMANDS.items():
        out.append({"name": name, "description": what[:100], "type": 1,
                    "options": [{"type": 3, "name": opt, "description": opt, "required": req}
                                for opt, req in OPTIONS.get(name, [])]})
    return out


class DiscordBridge(Bridge):
    name = "discord"

    def __init__(self, cfg: Any, env: Any, host: Any) -> None:
        super().__init__(cfg, env, host)
        self.token = ""
        self.channel_id = ""
        self.client: Any = None
        self._registered = False

    def has_default_target(self) -> bool:
        return bool(self.channel_id)

    async def start(self) -> None:
        self.token = self.secret(self.cfg.token_env)
        self.channel_id = (self.cfg.channel_id or self.secret(self.cfg.channel_id_env)).strip()
        if not self.token:
            self.disable(f"${self.cfg.token_env} is unset or empty")
            return
        self.state.enabled = True
        self.state.inbound = True
        self.state.state = "connecting"
        self.spawn(self._run())

    async def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception as exc:
                log.debug("discord: closing: %s", exc)
        await super().stop()

    def _new_client(self) -> Any:
        import discord

        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True  # content of DMs and of messages that mention us comes without the intent
        client = discord.Client(intents=intents, guild_ready_timeout=0.2, max_messages=None,
                                chunk_guilds_at_startup=False)

        @client.event
        async def on_ready() -> None:
            self.connected(f"gateway as {client.user}")
            if self.cfg.slash_commands and not self._registered and client.application_id:
                self._registered = True
                try:
                    await client.http.bulk_upsert_global_commands(client.application_id, command_payload())
                except Exception as exc:
                    log.warning("messaging: discord: registering slash commands failed: %s", exc)

        @client.event
        async def on_resumed() -> None:
            self.connected(f"gateway as {client.user} (resumed)")

        @client.event
        async def on_disconnect() -> None:
            if self.state.state == "connected":
                self.state.state, self.state.detail = "connecting", "gateway dropped; resuming"
                self.state.reconnects += 1

        @client.event
        async def on_message(message: Any) -> None:
            try:
                inbound = self._from_message(client, message)
            except (AttributeError, TypeError, ValueError) as exc:
                log.warning("messaging: discord sent a malformed message (%s); skipped", exc)
                return
            if inbound is not None:
                self.host.receive(self, inbound)

        @client.event
        async def on_interaction(interaction: Any) -> None:
            try:
                inbound = await self._from_interaction(client, interaction)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                log.warning("messaging: discord sent a malformed interaction (%s); skipped", exc)
                return
            if inbound is not None:
                self.host.receive(self, inbound)

        return client

    async def _run(self) -> None:
        await self.load("discord")
        import aiohttp
        import discord
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        Route.BASE = self.cfg.api_base_url.rstrip("/")
        bridge = self

        class BridgeBackoff:
            """discord.py's reconnect delay, replaced (``Client.connect`` builds one per connection)."""

            def __init__(self, *_args: Any, **_kw: Any) -> None:
                pass

            def delay(self) -> float:
                return bridge.retry_delay(unreachable=True)

        discord.client.ExponentialBackoff = BridgeBackoff  # type: ignore[attr-defined,misc]
        while True:
            client = self._new_client()
            self.client = client
            try:
                await client.login(self.token)
                # discord.py dials its built-in gateway; ask REST for the real one, as a client should
                _shards, url, _limits = await client.http.get_bot_gateway()
                DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
                await client.connect(reconnect=True)
                if self.client is None:
                    return  # stopped
            except asyncio.CancelledError:
                raise
            except discord.LoginFailure as exc:
                self._fatal(f"token rejected (401 Unauthorized): revoked or wrong; not retrying ({exc})")
                return
            except discord.PrivilegedIntentsRequired:
                self._fatal("the gateway demands a privileged intent; this bot uses none (check the app settings)")
                return
            except discord.ConnectionClosed as exc:
                if exc.code == 4004:
                    self._fatal("token rejected by the gateway (4004): revoked or wrong; not retrying")
                    return
                self.state.error(f"gateway closed: {exc.code} {exc.reason}")
            except (discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError, OSError,
                    TimeoutError) as exc:
                self.state.error(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # discord.py internals: reconnect rather than stop the bridge
                log.exception("messaging: discord: the client failed")
                self.state.error(f"{type(exc).__name__}: {exc}")
            finally:
                if self.client is client:
                    await client.close()
            if self.client is None:
                return
            self.state.state, self.state.detail = "connecting", "reconnecting"
            self.state.reconnects += 1
            await asyncio.sleep(self.retry_delay(unreachable=True))

    def _fatal(self, text: str) -> None:
        self.state.state, self.state.detail = "error", text
        self.state.error(text)
        log.error("messaging: discord: %s. Fix $%s and reload.", text, self.cfg.token_env)

    # -- inbound -----------------------------------------------------------------------------------------
    def _from_message(self, client: Any, message: Any) -> Inbound | None:
        if message.author.bot or (client.user is not None and message.author.id == client.user.id):
            return None
        import discord

        is_dm = isinstance(message.channel, discord.DMChannel)
        mentioned = client.user is not None and any(u.id == client.user.id for u in message.mentions)
        if not (is_dm or mentioned):
            return None
        command = self.host.command_of(_MENTION.sub("", message.content or ""), True)
        if command is None:
            return None
        return Inbound("discord", str(message.author.id), str(message.channel.id), command, f"msg:{message.id}",
                       str(message.author))

    async def _from_interaction(self, client: Any, interaction: Any) -> Inbound | None:
        import discord

        data = interaction.data or {}
        if interaction.type == discord.InteractionType.application_command:
            name = str(data["name"])
            args = " ".join(str(o.get("value", "")) for o in data.get("options") or [])
            text = f"/{name} {args}".strip()
            ack = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "thinking…", then we edit in the answer
        elif interaction.type == discord.InteractionType.component:
            parts = str(data.get("custom_id", "")).split(":", 2)
            if len(parts) != 3 or parts[0] != "aiwg" or parts[1] not in ("approve", "reject"):
                return None
            text = f"/{parts[1]} {parts[2]}"
            ack = 6  # DEFERRED_UPDATE_MESSAGE
        else:
            return None
        await self._rest("POST", "/interactions/{interaction_id}/{interaction_token}/callback",
                         {"type": ack}, interaction_id=interaction.id, interaction_token=interaction.token)
        first = [ack == 5]
        app_id, token = interaction.application_id, interaction.token
        born = time.monotonic()

        async def respond(msg: OutMessage) -> None:
            if time.monotonic() - born > INTERACTION_TOKEN_S:
                raise SendError("discord: the interaction token has expired", permanent=True)
            body = fmt.discord(msg)
            if first[0]:
                first[0] = False
                await self._rest("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", body,
                                 webhook_id=app_id, webhook_token=token)
            else:
                await self._rest("POST", "/webhooks/{webhook_id}/{webhook_token}", body,
                                 webhook_id=app_id, webhook_token=token)
            self.state.messages_out += 1

        async def private(msg: OutMessage) -> None:
            """Ephemeral: only the one who typed or pressed sees it. A slash command's public "thinking…"
            goes, so nothing public is left for a refused command; a pressed button keeps its message."""
            if time.monotonic() - born > INTERACTION_TOKEN_S:
                raise SendError("discord: the interaction token has expired", permanent=True)
            await self._rest("POST", "/webhooks/{webhook_id}/{webhook_token}", {**fmt.discord(msg), "flags": 64},
                             webhook_id=app_id, webhook_token=token)
            if first[0]:
                first[0] = False
                await self._rest("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", {},
                                 webhook_id=app_id, webhook_token=token)

        return Inbound("discord", str(interaction.user.id), str(interaction.channel_id), text,
                       f"int:{interaction.id}", str(interaction.user), responder=respond, private_reply=private)

    # -- outbound ------------------------------------------------------------------------------------------
    async def _rest(self, method: str, path: str, body: dict[str, Any], **params: Any) -> Any:
        import aiohttp
        import discord
        from discord.http import Route

        client = self.client
        if client is None or client.http.token is None:
            raise SendError("discord: not logged in yet")
        try:
            return await client.http.request(Route(method, path, **params), json=body)
        except (discord.Forbidden, discord.NotFound) as exc:
            raise SendError(f"discord {method} {path}: {exc}", permanent=True) from None
        except discord.HTTPException as exc:
            raise SendError(f"discord {method} {path}: {exc}", permanent=exc.status in (400, 401)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SendError(f"discord {method} {path}: {type(exc).__name__}: {exc}") from None

    async def send(self, msg: OutMessage, target: str | None = None) -> str | None:
        channel = target or self.channel_id
        if not channel:
            raise SendError("discord: no channel: set $" + self.cfg.channel_id_env, permanent=True)
        sent = await self._rest("POST", "/channels/{channel_id}/messages", fmt.discord(msg), channel_id=channel)
        self.state.messages_out += 1
        mid = sent.get("id") if isinstance(sent, dict) else None
        return f"{channel}:{mid}" if mid else None

    async def close_prompt(self, ref: str, msg: OutMessage, outcome: str) -> None:
        channel, _, mid = ref.rpartition(":")
        body = fmt.discord(OutMessage(f"{msg.text}\n→ {outcome}", msg.title, msg.severity, [], msg.reply))
        await self._rest("PATCH", "/channels/{channel_id}/messages/{message_id}", {**body, "components": []},
                         channel_id=channel, message_id=mid)
