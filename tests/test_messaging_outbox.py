"""Each bridge's outbox: the platforms' servers go away for 30 s while alerts and approval requests are sent;
each message reaches each platform once, in order, after it is back; meanwhile ``status`` names the bridges
that wait, and the outbox says how many messages wait."""

from __future__ import annotations

import re
import time

from fake_discord import TOKEN as DISCORD_TOKEN
from fake_discord import FakeDiscord
from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from fake_telegram import FakeTelegram
from messaging_support import TG_TOKEN, WRITER, write_service_config
from service_fixture import ServiceEnv, wait_for

OUTAGE_S = 30.0


def bridges(env: ServiceEnv) -> dict:
    return env.call("messaging.status")["bridges"]


def order(texts: list[str]) -> list[str]:
    """The alerts and approval prompts among a platform's messages, in the order they arrived."""
    out = []
    for t in texts:
        m = re.search(r"alert \d+|deploy inbox/\w+\?", t)
        if m:
            out.append(m.group(0))
    return out


def test_three_platforms_away_for_30_s_get_every_message_once_in_order(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg, FakeSlack() as slack, FakeDiscord() as dc:
        svc_env.env.update(AIWG_TELEGRAM_TOKEN=TG_TOKEN, AIWG_TELEGRAM_CHAT_ID="777",
                           AIWG_SLACK_BOT_TOKEN=BOT_TOKEN, AIWG_SLACK_APP_TOKEN=APP_TOKEN, AIWG_SLACK_CHANNEL="C100",
                           AIWG_DISCORD_TOKEN=DISCORD_TOKEN, AIWG_DISCORD_CHANNEL_ID="4242")
        write_service_config(svc_env, {
            "users": {f"telegram:{WRITER}": "write", "slack:U1": "write", "discord:7001": "write"},
            "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 5},
            "slack": {"api_base_url": slack.base + "/api/"},  # the default 2 s ping notices the drop
            "discord": {"api_base_url": dc.api}, "apprise": {"enabled": False},
        })
        svc_env.write_project_config({
            "watch": {"debounce_ms": 0, "paths": [{"path": "inbox/", "events": ["create"]}]},
            "schedule": {"jobs": []},
            "rules": [{"id": "deploy", "triggers": [{"type": "file.create"}], "mode": "parallel",
                       "actions": [{"approve": {"message": "deploy {path}?"}}, {"shell": "true"}]}],
        })
        (svc_env.project / "inbox").mkdir()
        svc_env.start()
        wait_for(lambda: svc_env.call("messaging.status")["connected"] == 3, 30, what="three bridges up")
        svc_env.ctl("notify", "alert 0", check=True)
        tg.wait(lambda: order(tg.texts(777)) == ["alert 0"], what="the first alert on telegram")

        for fake in (tg, slack, dc):
            fake.down()
        t_down = time.monotonic()
        expected = ["alert 0"]
        for i in range(1, 4):
            svc_env.ctl("notify", f"alert {i}", check=True)
            expected.append(f"alert {i}")
            (svc_env.project / "inbox" / f"f{i}").write_text("")
            expected.append(f"deploy inbox/f{i}?")
            wait_for(lambda i=i: len(svc_env.call("approval.list", {})["approvals"]) >= i, 20,
                     what=f"approval {i} requested")
        # they wait, durably, and status names the bridges that cannot deliver
        waiting = wait_for(lambda: all((b.get("outbox") or {}).get("queued") == 6 for n, b in bridges(svc_env).items()
                                       if n != "apprise") and bridges(svc_env), 30, what="six messages waiting each")
        assert all(waiting[n]["outbox"]["dropped"] == 0 for n in ("telegram", "slack", "discord"))
        st = wait_for(lambda: (s := svc_env.call("daemon.status"))["health"] == "degraded" and s, 30,
                      what="status degraded")
        assert any("telegram" in i and "6 message(s) wait" in i for i in st["issues"]), st["issues"]
        human = svc_env.ctl("status").stdout
        assert "telegram" in human and "wait in its outbox" in human
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))  # the outage itself: 30 s of nothing

        for fake in (tg, slack, dc):
            fake.up()
        tg.wait(lambda: len(order(tg.texts(777))) >= len(expected), 30, what="telegram delivered")
        slack.wait(lambda: len(order([str(p) for p in slack.posts if p.get("channel") == "C100"])) >= len(expected),
                   30, what="slack delivered")
        dc.wait(lambda: len(order([str(m) for m in dc.messages])) >= len(expected),
                30, what="discord delivered")
        assert order(tg.texts(777)) == expected
        assert order([str(p) for p in slack.posts if p.get("channel") == "C100"]) \
            == expected
        assert order([str(m) for m in dc.messages]) == expected
        wait_for(lambda: all((b.get("outbox") or {}).get("queued") == 0 for n, b in bridges(svc_env).items()
                             if n != "apprise"), 20, what="the outboxes empty")
        # inbound is back too, within 2 s of the server's return (plus what the messages took)
        tg.push_message(WRITER, "/status")
        tg.wait(lambda: any("aiwg status" in t for t in tg.texts(WRITER)), 20, what="telegram inbound after the outage")
        slack.push_dm("U1", "status")
        slack.wait(lambda: any("aiwg status" in str(p) for p in slack.posts if p.get("channel") == "D100"), 20,
                   what="slack inbound after the outage")
        dc.push_message("7001", "status")
        dc.wait(lambda: any("aiwg status" in t for t in dc.replies()), 20, what="discord inbound after the outage")
        wait_for(lambda: svc_env.call("daemon.status")["health"] == "healthy", 30, what="healthy again")
        assert svc_env.stop() == 0
