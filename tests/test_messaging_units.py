"""The hub's pure parts: formatting and limits per platform, command parsing, rate limits, routing, config."""

from __future__ import annotations

import json

import pytest

from aiwg_service import config, schemas  # noqa: F401  (registers every section)
from aiwg_service.messaging import format as fmt
from aiwg_service.messaging.announce import event_message, severity_of
from aiwg_service.messaging.bridge import Backoff
from aiwg_service.messaging.commands import RateLimiter, parse
from aiwg_service.messaging.hub import MessagingSubsystem
from aiwg_service.messaging.model import Button, OutMessage
from aiwg_service.messaging.schema import MessagingSection, Subscription
from aiwg_service.protocol import Event


def ev(type_: str, data: dict | None = None, project: str | None = None) -> Event:
    return Event("ev-1", type_, "2026-01-01T00:00:00.000Z", project, "test", data or {})


def test_every_platform_cuts_to_its_limit_and_escapes() -> None:
    nasty = "<b>&*_`@everyone" + "<" * 9000
    msg = OutMessage(nasty, title="T", severity="critical")
    tg = fmt.telegram(msg)
    assert len(tg["text"]) <= fmt.TELEGRAM_TEXT and tg["text"].endswith("… (cut)")
    assert "<b>&amp;" not in tg["text"] and "&lt;b&gt;&amp;*_`@everyone" in tg["text"]
    sl = fmt.slack(msg)
    section = sl["blocks"][0]["text"]["text"]
    assert len(section) <= fmt.SLACK_TEXT and "&lt;b&gt;&amp;" in section
    assert len(sl["text"]) <= fmt.SLACK_TEXT
    dc = fmt.discord(msg)
    assert len(dc["embeds"][0]["description"]) <= fmt.DISCORD_EMBED_DESC and len(dc["content"]) <= 2000
    assert "@\u200beveryone" in dc["embeds"][0]["description"] and dc["allowed_mentions"] == {"parse": []}
    reply = fmt.discord(OutMessage("x" * 5000, reply=True))
    assert len(reply["content"]) == fmt.DISCORD_CONTENT


def test_plain_fallback_has_no_links_and_shows_severity() -> None:
    text = fmt.plain(OutMessage("see https://evil.example/x and www.a.b", title="Build", severity="warning"))
    assert text == "[WARNING] Build\nsee [link] and [link]"
    assert fmt.apprise(OutMessage("at http://x.y/z"))[1] == "at [link]"


def test_buttons_per_platform_and_the_64_byte_callback_limit() -> None:
    aid = "ap-3f9c1a2b"
    msg = OutMessage("ok?", buttons=[Button("Approve", "approve", aid), Button("Reject", "reject", aid)])
    assert fmt.telegram(msg)["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "a:ap-3f9c1a2b"
    assert fmt.slack(msg)["blocks"][-1]["elements"][1]["action_id"] == "aiwg_reject"
    assert fmt.discord(msg)["components"][0]["components"][0]["custom_id"] == "aiwg:approve:ap-3f9c1a2b"
    with pytest.raises(ValueError, match="72 bytes > 64"):
        fmt.callback_data("approve", "x" * 70)


@pytest.mark.parametrize(("text", "expected"), [
    ("/status", ("status", "")), ("/Status@aiwg_bot", ("status", "")), ("ask what is up", ("ask", "what is up")),
    ("/reject ap-1 too risky", ("reject", "ap-1 too risky")), ("/ask\nline two", ("ask", "line two")),
])
def test_parse(text: str, expected: tuple[str, str]) -> None:
    assert parse(text) == expected


def test_rate_limiter_is_a_sliding_window_per_user() -> None:
    rl = RateLimiter(2, 60)
    assert rl.allow("a", 0) and rl.allow("a", 1) and not rl.allow("a", 2) and rl.allow("b", 2)
    assert rl.allow("a", 60.5) and not rl.allow("a", 60.6)


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(1, 8)
    delays = [b.next() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and all(4 <= d <= 8 for d in delays[3:])
    b.reset()
    assert b.next() <= 1


def test_severity_and_messages_from_events() -> None:
    assert severity_of(ev("task.failed")) == "warning" and severity_of(ev("security.critical")) == "critical"
    assert severity_of(ev("notify.request", {"severity": "critical"})) == "critical"
    m = event_message(ev("approval.requested", {"id": "ap-1", "message": "deploy?"}, "/p/proj"))
    assert m.title == "Approval needed: ap-1 · proj" and [b.action for b in m.buttons] == ["approve", "reject"]
    t = event_message(ev("task.failed", {"id": "t-1", "prompt": "fix", "error": "boom"}))
    assert t.title == "Task t-1 failed" and "error: boom" in t.text
    b = event_message(ev("budget.warning", {"budget": "project.daily", "key": "/p/proj", "period": "2026-12-07",
                                            "spent_usd": 0.0123, "limit_usd": 0.015}))
    assert b.title == "Budget warning" and b.text == "project.daily budget for /p/proj: $0.0123 of $0.0150 (2026-12-07)"
    other = event_message(ev("health.degraded", {"subsystem": "watcher", "roots": ["/a", "/b"]}))
    assert other.text == 'subsystem: watcher\nroots: ["/a","/b"]' and "{" not in other.text


class _Bus:
    def subscribe(self, *a: object, **k: object) -> None: ...


def test_routing_by_channel_and_project() -> None:
    hub = MessagingSubsystem(_Bus(), lambda *_: None, lambda: None, None, None)  # type: ignore[arg-type]
    hub.section = MessagingSection()
    from aiwg_service.events.bus import compile_pattern

    hub._matchers = [(Subscription("task.failed"), compile_pattern("task.failed"), None),
                     (Subscription("file.*", channel="telegram:55"), compile_pattern("file.*"), "/p/a")]
    assert hub.route(ev("notify.request", {"message": "m", "channel": "slack"}), "telegram") == []
    assert hub.route(ev("notify.request", {"message": "m", "channel": "slack:C9"}), "slack")[0][1] == "C9"
    assert hub.route(ev("notify.request", {"message": "m", "channel": "#general"}), "discord")[0][1] is None
    assert hub.route(ev("task.failed", {}), "discord")
    assert hub.route(ev("file.create", {}, "/p/a"), "telegram")[0][1] == "55"
    assert hub.route(ev("file.create", {}, "/p/b"), "telegram") == []
    assert hub.route(ev("file.create", {}, "/p/a"), "slack") == []


@pytest.mark.parametrize(("section", "expected"), [
    ({"users": {"alice": "write"}}, "messaging.users.alice: must be platform:user-id"),
    ({"users": {"telegram:1": "admin"}}, 'messaging.users.telegram:1: "admin" is not one of read, write'),
    ({"telegram": {"api_base_url": "localhost"}}, 'messaging.telegram.api_base_url: "localhost" must be an http'),
    ({"subscriptions": [{"events": "task.*", "channel": "irc"}]}, "messaging.subscriptions[0].channel: 'irc' names no"),
    ({"slack": {"bot_token": "xoxb-1"}}, "messaging.slack.bot_token: looks like a secret"),
    ({"rate_limit": {"commands": 0}}, "messaging.rate_limit.commands: 0 must be >= 1"),
])
def test_config_errors_name_the_path(section: dict, expected: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        config.parse(json.dumps({"messaging": section}), "daemon.json")
    assert len(exc.value.errors) == 1 and exc.value.errors[0].startswith(f"daemon.json: {expected}"), exc.value.errors


def test_the_aiwg_defaults_need_no_config() -> None:
    cfg = config.parse("{}", "daemon.json").config.messaging
    assert cfg.telegram.token_env == "AIWG_TELEGRAM_TOKEN" and cfg.telegram.chat_id_env == "AIWG_TELEGRAM_CHAT_ID"
    assert cfg.slack.webhook_url_env == "AIWG_SLACK_WEBHOOK_URL" and cfg.discord.token_env == "AIWG_DISCORD_TOKEN"
    assert cfg.rate_limit.commands == 10 and cfg.rate_limit.per_seconds == 60 and cfg.users == {}


def test_telegram_errors_never_carry_the_token() -> None:
    import asyncio
    import socket

    from aiwg_service.messaging.schema import TelegramBridge as TelegramCfg
    from aiwg_service.messaging.telegram import ApiError, TelegramBridge

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go() -> str:
        cfg = TelegramCfg(api_base_url=f"http://127.0.0.1:{port}")
        bridge = TelegramBridge(cfg, {"AIWG_TELEGRAM_TOKEN": "999:SECRET-token"}, host=None)
        bridge.token = "999:SECRET-token"
        import aiohttp

        bridge.session = aiohttp.ClientSession()
        try:
            await bridge.call("getMe")
        except ApiError as exc:
            return str(exc)
        finally:
            await bridge.session.close()
        return "no error"

    text = asyncio.run(go())
    assert "SECRET" not in text and "ClientConnectorError" in text


def test_secrets_come_from_the_environment_or_a_systemd_credential(tmp_path: object) -> None:
    from pathlib import Path

    from aiwg_service.messaging.bridge import Bridge

    creds = Path(str(tmp_path))
    (creds / "AIWG_TELEGRAM_TOKEN").write_text("from-credential\n")
    b = Bridge(None, {"CREDENTIALS_DIRECTORY": str(creds), "AIWG_SLACK_BOT_TOKEN": " from-env "}, None, "x")
    assert b.secret("AIWG_SLACK_BOT_TOKEN") == "from-env"
    assert b.secret("AIWG_TELEGRAM_TOKEN") == "from-credential"
    assert b.secret("AIWG_DISCORD_TOKEN") == ""
