"""The ``messaging`` config section: bridges, who may command the service, what gets announced.

Secrets are never here: every token, webhook URL and Apprise URL list is named by an ``*_env`` key.
With no ``messaging`` section at all, the AIWG daemon's environment variables still configure the
bridges (``AIWG_SLACK_WEBHOOK_URL``, ``AIWG_DISCORD_TOKEN`` + ``AIWG_DISCORD_CHANNEL_ID``,
``AIWG_TELEGRAM_TOKEN`` + ``AIWG_TELEGRAM_CHAT_ID``), because those are the defaults below.

This module imports nothing from the service core, so config validation stays cheap; ``section`` registers it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from msgspec import Meta, Struct, field

Severity = Literal["info", "warning", "critical"]
Permission = Literal["read", "write"]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
BASE_URL = r"^(https?|wss?)://[^\s]+$"
BaseUrl = Annotated[str, Meta(pattern=BASE_URL)]
PLATFORMS = ("slack", "discord", "telegram")
BRIDGES = (*PLATFORMS, "apprise")
#: ``platform:user-id``: ids, never display names (Slack U…/W…, Discord snowflakes, Telegram integers).
USER_KEY = re.compile(r"^(slack|discord|telegram):[A-Za-z0-9_-]{1,64}$")


class SlackBridge(Struct, forbid_unknown_fields=False):
    enabled: bool = True
    webhook_url_env: EnvName = "AIWG_SLACK_WEBHOOK_URL"
    bot_token_env: EnvName = "AIWG_SLACK_BOT_TOKEN"  # xoxb-: chat.postMessage and replies
    app_token_env: EnvName = "AIWG_SLACK_APP_TOKEN"  # xapp-: Socket Mode (inbound)
    channel: str | None = None  # where notifications go with a bot token (an id such as C0123)
    channel_env: EnvName = "AIWG_SLACK_CHANNEL"
    api_base_url: BaseUrl = "https://slack.com/api/"
    #: Socket Mode keep-alive: slack_sdk notices a dropped socket, and reconnects, at its next ping
    ping_interval_seconds: Annotated[float, Meta(ge=0.5, le=300)] = 2.0


class DiscordBridge(Struct, forbid_unknown_fields=False):
    enabled: bool = True
    token_env: EnvName = "AIWG_DISCORD_TOKEN"
    channel_id: str | None = None
    channel_id_env: EnvName = "AIWG_DISCORD_CHANNEL_ID"
    api_base_url: BaseUrl = "https://discord.com/api/v10"
    slash_commands: bool = True  # register /help /status … as application commands at start


class TelegramBridge(Struct, forbid_unknown_fields=False):
    enabled: bool = True
    token_env: EnvName = "AIWG_TELEGRAM_TOKEN"
    chat_id: str | None = None
    chat_id_env: EnvName = "AIWG_TELEGRAM_CHAT_ID"
    api_base_url: BaseUrl = "https://api.telegram.org"
    poll_timeout_seconds: Annotated[int, Meta(ge=1, le=600)] = 50


class AppriseBridge(Struct, forbid_unknown_fields=False):
    enabled: bool = True
    urls_env: EnvName = "AIWG_APPRISE_URLS"  # whitespace- or comma-separated Apprise URLs


class RateLimit(Struct, forbid_unknown_fields=False):
    commands: Annotated[int, Meta(ge=1, le=10_000)] = 10
    per_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 60


class Subscription(Struct, forbid_unknown_fields=False):
    """Events of these types become messages. ``channel``: a bridge (``telegram``) or ``bridge:target``."""

    events: Annotated[str, Meta(min_length=1)]
    severity: Severity | None = None  # default: from the event type (failed -> warning, critical -> critical)
    channel: str | None = None


def default_subscriptions() -> list[Subscription]:
    """What the service file subscribes to when it says nothing (a project file subscribes to nothing)."""
    return [Subscription("task.failed"), Subscription("task.timeout"), Subscription("automation.loop_detected"),
            Subscription("approval.requested"), Subscription("approval.cancelled"), Subscription("health.degraded")]


class MessagingSection(Struct, forbid_unknown_fields=False):
    """Bridges, users, limits: read from the service-wide file only. ``subscriptions`` also per project."""

    enabled: bool = True
    #: ``"telegram:123456": "write"``; ``write`` includes ``read``. Nobody else gets anything.
    users: dict[str, Permission] = field(default_factory=dict)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    subscriptions: list[Subscription] | None = None  # None: the defaults above (service file) / none (project)
    #: where each project's events may be sent (service file only): ``{"*": [...], "/path/to/project": [...]}``,
    #: entries ``telegram`` (the bridge's own target), ``telegram:123`` (that chat) or ``telegram:*``. A project
    #: file's subscriptions and notify actions can only pick among these (``policy.gate``).
    project_channels: dict[str, list[str]] = field(default_factory=lambda: {"*": list(BRIDGES)})
    #: the project /ask conversations work in; default: the only project served
    project: str | None = None
    #: a message without a leading ``/`` in a private chat (or addressed to the bot) is a question (/ask)
    plain_messages_ask: bool = True
    working_notice_seconds: Annotated[float, Meta(ge=0, le=3600)] = 5.0
    ask_timeout_seconds: Annotated[float, Meta(ge=1, le=86_400)] = 1800.0
    retries: Annotated[int, Meta(ge=0, le=10)] = 3
    #: messages each bridge's outbox keeps while its platform is away; beyond it the oldest go (counted)
    outbox_max: Annotated[int, Meta(ge=1, le=1_000_000)] = 1000
    slack: SlackBridge = field(default_factory=SlackBridge)
    discord: DiscordBridge = field(default_factory=DiscordBridge)
    telegram: TelegramBridge = field(default_factory=TelegramBridge)
    apprise: AppriseBridge = field(default_factory=AppriseBridge)


def check_section(section: MessagingSection) -> list[tuple[str, str]]:
    """What types cannot say: user keys are platform ids, subscription channels name a bridge."""
    errors: list[tuple[str, str]] = []
    for key in section.users:
        if not USER_KEY.match(key):
            errors.append((f"messaging.users.{key}", "must be platform:user-id (slack:U0123, discord:8035111022467891, "
                                                     "telegram:123456): ids, never display names"))
    for i, sub in enumerate(section.subscriptions or []):
        if sub.channel is not None and sub.channel.partition(":")[0] not in BRIDGES:
            errors.append((f"messaging.subscriptions[{i}].channel",
                           f"{sub.channel!r} names no bridge (one of {', '.join(BRIDGES)}, optionally :target)"))
    return errors
