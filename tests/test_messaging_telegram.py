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


def test_restart_in_the_middle_of_a_poll_neither_loses_nor_repeats(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base, telegram={"api_base_url": tg.base, "poll_timeout_seconds": 30})
        first = tg.push_message(WRITER, "/help")
        tg.wait(lambda: tg.texts(WRITER), what="the /help reply")
        # the service now sits in a 30 s long poll that confirmed `first`; stop it right there
        tg.wait(lambda: first + 1 in tg.poll_offsets, what="a poll that confirms the first update")
        polls = tg.polls
        assert svc_env.stop() == 0
        assert tg.polls == polls  # it did not poll again on its way out
        second = tg.push_message(WRITER, "/status")  # arrives while the service is down
        svc_env.start()
        tg.wait(lambda: len(tg.texts(WRITER)) >= 2, what="the /status reply after the restart")
        tg.wait(lambda: tg.poll_offsets[-1] == second + 1, what="the second update confirmed")
        texts = tg.texts(WRITER)
        assert len(texts) == 2 and "aiwg commands" in texts[0] and "aiwg status" in texts[1]
        assert tg.poll_offsets[polls] == first + 1  # the restarted service resumed from the stored offset
        assert svc_env.stop() == 0
        assert len(tg.texts(WRITER)) == 2


def test_conflict_revoked_token_rate_limit_and_bad_updates(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        tg.conflict_next = 2
        svc_env.env["AIWG_DISCORD_TOKEN"] = ""  # empty: that bridge is disabled with a reason, the rest run
        start_with_telegram(svc_env, tg.base, discord={"enabled": True})
        seen = wait_for(lambda: "another poller" in _bridge(svc_env)["detail"] and _bridge(svc_env), 15,
                        what="the 409 status line")
        assert seen["state"] == "error" and "409" in seen["last_error"]
        wait_for(lambda: _bridge(svc_env)["state"] == "connected", 20, what="connected after the conflict")
        dc = svc_env.call("messaging.status")["bridges"]["discord"]
        assert dc["state"] == "disabled" and "$AIWG_DISCORD_TOKEN is unset or empty" in dc["detail"]
        # malformed updates are logged and skipped; the good command behind them runs
        tg.push_raw("garbage")
        tg.push({"message": {"text": "/status", "chat": {"id": 5}}})  # no sender
        tg.push_message(WRITER, "/help")
        tg.wait(lambda: tg.texts(WRITER), what="the reply after the bad updates")
        assert "malformed update" in svc_env.log_text()
        # 429 with retry_after: waited out, then delivered; 10,000 characters: cut, not refused
        tg.rate_limit_next = 1
        svc_env.call("messaging.notify", {"message": "x" * 10_000})
        tg.wait(lambda: tg.texts(777), what="the long notification")
        assert len(tg.texts(777)[0]) <= 4096 and tg.texts(777)[0].endswith("… (cut)")
        # the token is revoked: 401 stops the bridge with a clear status, not a retry loop
        tg.tokens.clear()
        tg.push_message(WRITER, "/help")  # wakes the pending poll's successor into a 401
        st = wait_for(lambda: _bridge(svc_env)["state"] == "error" and _bridge(svc_env), 80,
                      what="the revoked token status")
        assert "token rejected (401" in st["detail"]
        assert svc_env.call("ping")["pong"] is True
        assert svc_env.stop() == 0


def test_undeliverable_messages_wait_in_the_outbox_and_refusals_are_dead_lettered(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        tg.fail_sends = True
        start_with_telegram(svc_env, tg.base, retries=1)
        wait_for(lambda: _bridge(svc_env)["state"] == "connected", 15, what="telegram connected")
        svc_env.ctl("notify", "first", check=True)
        svc_env.ctl("notify", "nobody home", "--channel", "telegram:404", check=True)  # permanent: no retry
        svc_env.ctl("notify", "third", check=True)
        # Telegram answers 502: the messages wait in the outbox, in order, however many attempts it takes
        wait_for(lambda: _bridge(svc_env)["send_failures"] >= 3, 30, what="three failed attempts")
        box = _bridge(svc_env)["outbox"]
        assert box["queued"] == 3 and box["dropped"] == 0
        assert svc_env.call("events.dlq")["dead_letters"] == []
        tg.fail_sends = False  # the platform is back: each goes once, in order; the refused one is dead-lettered
        tg.wait(lambda: len(tg.texts(777)) >= 2, what="the waiting messages")
        assert ["first" in t for t in tg.texts(777)] == [True, False] and "third" in tg.texts(777)[1]
        dead = wait_for(lambda: svc_env.call("events.dlq")["dead_letters"], 20, what="the refused message")
        assert len(dead) == 1 and dead[0]["event"]["data"]["message"] == "nobody home"
        assert dead[0]["subscriber"] == "messaging.telegram" and "chat not found" in dead[0]["error"]
        wait_for(lambda: _bridge(svc_env)["outbox"]["queued"] == 0, 20, what="the outbox empty")
        # a replay queues it again (and it is refused again: the chat still does not exist)
        svc_env.ctl("events", "replay", dead[0]["id"], check=True)
        wait_for(lambda: len(svc_env.call("events.dlq")["dead_letters"]) == 1
                 and svc_env.call("events.dlq")["dead_letters"][0]["id"] != dead[0]["id"], 20, what="refused again")
        assert svc_env.call("ping")["pong"] is True
        assert svc_env.stop() == 0


def test_the_outbox_is_bounded_oldest_first_and_survives_a_restart(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg:
        tg.fail_sends = True
        start_with_telegram(svc_env, tg.base, outbox_max=3)
        wait_for(lambda: _bridge(svc_env)["state"] == "connected", 15, what="telegram connected")
        for i in range(5):
            svc_env.ctl("notify", f"n{i}", check=True)
        wait_for(lambda: _bridge(svc_env)["outbox"]["dropped"] == 2, 20, what="two dropped")
        assert _bridge(svc_env)["outbox"]["queued"] == 3
        assert svc_env.stop() == 0  # what waits is on disk: the next run sends it
        tg.fail_sends = False
        svc_env.start()
        tg.wait(lambda: len(tg.texts(777)) >= 3, what="the kept messages after a restart")
        assert [t.split()[-1] for t in tg.texts(777)] == ["n2", "n3", "n4"]
        assert "dropped its 1 oldest" in svc_env.log_text()
        assert svc_env.stop() == 0


def test_reload_changes_permissions_without_reconnecting(svc_env: ServiceEnv) -> None:
    from messaging_support import telegram_section, write_service_config

    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base)
        tg.push_message(READER, "/cancel t-1")
        tg.wait(lambda: tg.texts(READER), what="the refusal")
        assert "needs write permission" in tg.texts(READER)[0]
        section = telegram_section(tg.base)
        section["users"][f"telegram:{READER}"] = "write"
        write_service_config(svc_env, section)
        assert svc_env.call("daemon.reload")["reloaded"] is True
        tg.push_message(READER, "/cancel t-1")
        tg.wait(lambda: len(tg.texts(READER)) >= 2, what="the second answer")
        assert tg.texts(READER)[1] == "No task t-1."
        assert [c[0] for c in tg.calls].count("getMe") == 1  # the bridge kept its connection
        assert svc_env.stop() == 0


def test_unknown_channel_is_an_error_and_a_fixed_credential_restarts_a_stopped_bridge(svc_env: ServiceEnv) -> None:
    from messaging_support import TG_TOKEN, telegram_section, write_service_config

    with FakeTelegram() as tg:
        creds = svc_env.tmp / "credentials"
        creds.mkdir(mode=0o700)
        (creds / "AIWG_TELEGRAM_TOKEN").write_text("123456:WRONG-token\n")
        svc_env.env["CREDENTIALS_DIRECTORY"] = str(creds)
        svc_env.env["AIWG_TELEGRAM_CHAT_ID"] = "777"
        write_service_config(svc_env, telegram_section(tg.base))
        svc_env.start()
        st = wait_for(lambda: _bridge(svc_env)["state"] == "error" and _bridge(svc_env), 30, what="the 401 stop")
        assert "token rejected" in st["detail"]
        status = svc_env.ctl("status")
        assert "degraded" in status.stdout + status.stderr and "the telegram bridge stopped: token rejected" \
            in status.stdout + status.stderr
        # a typo in the channel is an error, not a message to every bridge
        bad = svc_env.ctl("notify", "hello", "-c", "telegramm")
        assert bad.returncode == 1 and "'telegramm' names no bridge" in bad.stderr
        off = svc_env.ctl("notify", "hello", "-c", "slack")
        assert off.returncode == 1 and "the slack bridge is not enabled" in off.stderr
        # a message meanwhile waits in the outbox (not dead-lettered: the token is bad, not the message)
        svc_env.ctl("notify", "while stopped", "-c", "telegram", check=True)
        wait_for(lambda: _bridge(svc_env)["outbox"]["queued"] == 1, 20, what="the message waiting")
        # the credential is fixed: a reload restarts the bridge (the same config would not)
        (creds / "AIWG_TELEGRAM_TOKEN").write_text(TG_TOKEN + "\n")
        assert svc_env.call("daemon.reload")["reloaded"] is True
        wait_for(lambda: _bridge(svc_env)["state"] == "connected", 30, what="the bridge back after the reload")
        tg.wait(lambda: tg.texts(777), what="the waiting message after the fix")
        assert "while stopped" in tg.texts(777)[0] and svc_env.call("events.dlq")["dead_letters"] == []
        assert svc_env.call("daemon.status")["health"] == "healthy"
        assert svc_env.stop() == 0
