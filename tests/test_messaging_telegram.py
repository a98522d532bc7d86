"""Telegram end to end: the real service against a local Bot API speaking Telegram's wire protocol."""

from __future__ import annotations

from fake_telegram import FakeTelegram
from messaging_support import READER, STRANGER, WRITER, start_with_telegram
from service_fixture import ServiceEnv, wait_for


def _bridge(svc_env: ServiceEnv) -> dict:
    return svc_env.call("messaging.status")["bridges"]["telegram"]


def test_commands_permissions_and_notify(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base)
        wait_for(lambda: _bridge(svc_env)["state"] == "connected", 15, what="telegram connected")
        tg.push_message(WRITER, "/status")
        tg.wait(lambda: tg.texts(WRITER), what="a /status reply")
        assert "aiwg status" in tg.texts(WRITER)[0] and "project" in tg.texts(WRITER)[0]
        # an unlisted user: a polite refusal naming their id, nothing runs; logged
        tg.push_message(STRANGER, "/tasks")
        tg.wait(lambda: tg.texts(STRANGER), what="a refusal")
        assert "not allowed" in tg.texts(STRANGER)[0] and "telegram:99" in tg.texts(STRANGER)[0]
        # read permission cannot cancel
        tg.push_message(READER, "/cancel t-1")
        tg.wait(lambda: tg.texts(READER), what="a write refusal")
        assert "needs write permission" in tg.texts(READER)[0]
        # unknown command: the list of known ones
        tg.push_message(WRITER, "/frobnicate")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 2, what="unknown command reply")
        assert "Known commands: /help, /status" in tg.texts(WRITER)[1]
        # aiwgctl notify goes out to the configured chat, HTML-escaped, with the severity shown
        res = svc_env.ctl("notify", "build <b>broke</b> & more", "--severity", "critical", check=True)
        assert "telegram" in res.stdout
        tg.wait(lambda: tg.texts(777), what="notify delivered")
        sent = next(m for m in tg.sent if str(m["chat_id"]) == "777")
        assert sent["parse_mode"] == "HTML" and "build &lt;b&gt;broke&lt;/b&gt; &amp; more" in sent["text"]
        assert "critical" in sent["text"]
        st = svc_env.ctl("messaging", "status", check=True).stdout
        assert "telegram" in st and "connected" in st
        status = svc_env.call("daemon.status")["subsystems"]["messaging"]
        assert status["enabled"] is True and status["adapters"] == 1
        assert status["commands"]["refused"] == 2
        assert "refused a command from unlisted user telegram:99" in svc_env.log_text()
        assert svc_env.stop() == 0


def test_rate_limit(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base, rate_limit={"commands": 3, "per_seconds": 600})
        for _ in range(4):
            tg.push_message(WRITER, "/help")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 4, what="four answers")
        texts = tg.texts(WRITER)
        assert sum("Rate limit exceeded" in t for t in texts) == 1
        assert sum("aiwg commands" in t for t in texts) == 3
        assert svc_env.stop() == 0
