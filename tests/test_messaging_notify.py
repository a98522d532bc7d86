"""A rule's notify reaches every platform at once: Telegram, Slack, Discord and an Apprise URL."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from fake_discord import TOKEN as DISCORD_TOKEN
from fake_discord import FakeDiscord
from fake_server import ThreadedServer
from fake_slack import FakeSlack
from fake_telegram import FakeTelegram
from messaging_support import TG_TOKEN, write_service_config
from service_fixture import ServiceEnv, wait_for


class JsonSink(ThreadedServer):
    """What Apprise's json:// service posts to: any HTTP endpoint taking JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.take)
        return app

    async def take(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self.lock:
            self.posts.append(body)
        return web.Response(text="ok")


def test_a_rules_notify_reaches_every_platform(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg, FakeSlack() as slack, FakeDiscord() as dc, JsonSink() as sink:
        svc_env.env.update(AIWG_TELEGRAM_TOKEN=TG_TOKEN, AIWG_TELEGRAM_CHAT_ID="777",
                           AIWG_SLACK_WEBHOOK_URL=slack.hook_url,
                           AIWG_DISCORD_TOKEN=DISCORD_TOKEN, AIWG_DISCORD_CHANNEL_ID="4242",
                           AIWG_APPRISE_URLS=f"json://127.0.0.1:{sink.port}/notify")
        write_service_config(svc_env, {
            "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 5},
            "slack": {"api_base_url": slack.base + "/api/"},
            "discord": {"api_base_url": dc.api},
        })
        svc_env.write_project_config({
            "watch": {"debounce_ms": 0, "paths": [{"path": "inbox/", "events": ["create"]}]},
            "schedule": {"jobs": []},
            "rules": [{"id": "announce", "triggers": [{"type": "file.create"}],
                       "actions": [{"notify": {"message": "new file {path} <ok>", "severity": "warning"}}]}],
        })
        (svc_env.project / "inbox").mkdir()
        svc_env.start()
        wait_for(lambda: svc_env.call("messaging.status")["connected"] == 4, 40, what="all four bridges up")
        status = svc_env.call("daemon.status")["subsystems"]["messaging"]
        assert status["enabled"] is True and status["adapters"] == 4
        (svc_env.project / "inbox" / "report.txt").write_text("hi")
        tg.wait(lambda: tg.texts(777), what="telegram")
        slack.wait(lambda: slack.hook_posts, what="slack webhook")
        dc.wait(lambda: dc.messages, what="discord channel message")
        sink.wait(lambda: sink.posts, what="apprise json post")
        assert "new file inbox/report.txt &lt;ok&gt;" in tg.texts(777)[0] and "warning" in tg.texts(777)[0]
        assert "new file inbox/report.txt &lt;ok&gt;" in slack.hook_posts[0]["blocks"][0]["text"]["text"]
        embed = dc.messages[0]["embeds"][0]
        assert embed["description"] == "new file inbox/report.txt <ok\\>"
        assert dc.messages[0]["channel_id"] == "4242" and embed["footer"]["text"].endswith("warning")
        assert sink.posts[0]["message"] == "new file inbox/report.txt <ok>" and sink.posts[0]["type"] == "warning"
        # counted once the platform's answer is back (the fake records the post a moment before)
        wait_for(lambda: all((bs := svc_env.call("messaging.status")["bridges"])[b]["messages_out"] == 1
                             and bs[b]["outbox"]["queued"] == 0 for b in ("telegram", "slack", "discord", "apprise")),
                 20, what="each bridge's one message counted and its outbox empty")
        assert svc_env.stop() == 0
