"""Slack end to end: the real service against a local Slack (Web API, Socket Mode websocket, webhook)."""

from __future__ import annotations

from typing import Any

from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from messaging_support import write_service_config
from service_fixture import ServiceEnv, wait_for


def _start(svc_env: ServiceEnv, slack: FakeSlack, **slack_cfg: Any) -> None:
    svc_env.env.update(AIWG_SLACK_BOT_TOKEN=BOT_TOKEN, AIWG_SLACK_APP_TOKEN=APP_TOKEN,
                       AIWG_SLACK_WEBHOOK_URL=slack.hook_url)
    write_service_config(svc_env, {
        "users": {"slack:U1": "write", "slack:U2": "read"},
        "slack": {"api_base_url": slack.base + "/api/", "ping_interval_seconds": 1, **slack_cfg},
        "telegram": {"enabled": False}, "discord": {"enabled": False}, "apprise": {"enabled": False},
    })
    svc_env.start()
    wait_for(lambda: svc_env.call("messaging.status")["bridges"]["slack"]["state"] == "connected", 20,
             what="slack connected")


def test_socket_mode_commands_acks_and_webhook(svc_env: ServiceEnv) -> None:
    with FakeSlack() as slack:
        _start(svc_env, slack)
        e1 = slack.push_slash("U1", "status")
        slack.wait(lambda: slack.texts("C100"), what="a /aiwg status reply")
        assert "aiwg status" in slack.texts("C100")[0]
        assert e1 in slack.acks
        slack.push_mention("U2", "tasks", channel="C200")
        slack.wait(lambda: slack.texts("C200"), what="an @mention reply")
        assert "No tasks" in slack.texts("C200")[0] or "newest tasks" in slack.texts("C200")[0]
        slack._envelope("slash_commands", {"command": "/aiwg", "text": "status"}, True)  # no user, no channel
        slack._envelope("events_api", {"event": "not an object"}, False)
        slack.push_dm("U9", "status", channel="D9")  # nobody listed U9
        slack.wait(lambda: slack.texts("D9"), what="a refusal")
        assert "not allowed" in slack.texts("D9")[0]
        assert svc_env.log_text().count("slack sent a malformed") == 2 and len(slack.acks) == 5
        # notifications without a channel go to the incoming webhook, mrkdwn-escaped
        svc_env.ctl("notify", "deploy <!channel> & done", "--severity", "warning", check=True)
        slack.wait(lambda: slack.hook_posts, what="the webhook post")
        post = slack.hook_posts[0]
        assert "&lt;!channel&gt; &amp; done" in post["blocks"][0]["text"]["text"]
        assert "warning" in post["blocks"][1]["elements"][0]["text"]
        assert "<!channel>" in post["text"] or "[WARNING]" in post["text"]
        assert svc_env.stop() == 0


def test_drop_mid_stream_neither_loses_nor_repeats(svc_env: ServiceEnv) -> None:
    with FakeSlack() as slack:
        _start(svc_env, slack)
        slack.drop_after_send = True
        slack.push_slash("U1", "help", channel="C300")
        # the connection dropped right after the envelope left; the service reconnects and Slack re-sends it
        slack.wait(lambda: slack.connections >= 2, 30, what="a reconnect")
        slack.push_slash("U1", "status", channel="C300")
        slack.wait(lambda: len(slack.texts("C300")) >= 2, 30, what="both replies")
        slack.wait(lambda: not slack.unacked, 10, what="every envelope acked")
        texts = slack.texts("C300")
        assert sum("aiwg commands" in t for t in texts) == 1, texts
        assert sum("aiwg status" in t for t in texts) == 1, texts
        st = svc_env.call("messaging.status")["bridges"]["slack"]
        assert st["reconnects"] >= 1 and st["messages_in"] == 2
        assert "slack delivered env:env-" in svc_env.log_text()  # the re-sent envelope was seen and ignored
        assert svc_env.stop() == 0


def test_revoked_tokens_stop_retrying_and_say_so(svc_env: ServiceEnv) -> None:
    from fake_discord import FakeDiscord

    with FakeSlack() as slack, FakeDiscord() as dc:
        svc_env.env.update(AIWG_SLACK_BOT_TOKEN="xoxb-revoked", AIWG_SLACK_APP_TOKEN=APP_TOKEN,
                           AIWG_DISCORD_TOKEN="revoked", AIWG_DISCORD_CHANNEL_ID="1")
        write_service_config(svc_env, {
            "slack": {"api_base_url": slack.base + "/api/"}, "discord": {"api_base_url": dc.api},
            "telegram": {"enabled": False}, "apprise": {"enabled": False},
        })
        svc_env.start()

        def both_failed() -> dict[str, Any] | None:
            b = svc_env.call("messaging.status")["bridges"]
            return b if b["slack"]["state"] == "error" and b["discord"]["state"] == "error" else None

        bridges = wait_for(both_failed, 20, what="both bridges to give up")
        assert "token rejected (invalid_auth)" in bridges["slack"]["detail"]
        assert "token rejected (401 Unauthorized)" in bridges["discord"]["detail"]
        calls = slack.connections
        status = svc_env.ctl("status", check=True).stdout
        assert "slack:error" in status and "discord:error" in status
        assert slack.connections == calls and dc.identifies == 0  # nothing keeps hammering the platforms
        assert svc_env.stop() == 0


def test_a_read_only_user_cannot_run_a_write_command_and_health_answers(svc_env: ServiceEnv) -> None:
    with FakeSlack() as slack:
        _start(svc_env, slack)
        slack.push_dm("U2", "cancel t-1", channel="D2")  # U2 may only read
        slack.wait(lambda: slack.texts("D2"), what="the write refusal")
        assert "needs write permission" in slack.texts("D2")[0]
        slack.push_dm("U2", "health", channel="D3")  # reading is fine
        slack.wait(lambda: slack.texts("D3"), what="the /health answer")
        health = slack.texts("D3")[0]
        assert "supervisor:" in health and "bridge slack: connected" in health
        assert svc_env.stop() == 0
