"""The same behaviour on every bridge: a plain message in a private chat is a question; refusals go to the one
who typed or pressed (an alert on Telegram, ephemeral on Slack and Discord), once per burst; a read-only
user's Approve press is refused and the buttons stay for everyone else."""

from __future__ import annotations

from fake_discord import TOKEN as DISCORD_TOKEN
from fake_discord import FakeDiscord
from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from fake_telegram import FakeTelegram
from messaging_support import READER, TG_TOKEN, WRITER, write_service_config
from service_fixture import ServiceEnv, wait_for
from tasks_support import make_fakebin


def section(tg: FakeTelegram, slack: FakeSlack, dc: FakeDiscord, **over: object) -> dict:
    sec = {
        "users": {f"telegram:{WRITER}": "write", f"telegram:{READER}": "read", "slack:U1": "write",
                  "slack:U2": "read", "discord:7001": "write", "discord:7002": "read"},
        "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 5},
        "slack": {"api_base_url": slack.base + "/api/", "ping_interval_seconds": 1},
        "discord": {"api_base_url": dc.api}, "apprise": {"enabled": False},
    }
    sec.update(over)
    return sec


def start(svc_env: ServiceEnv, tg: FakeTelegram, slack: FakeSlack, dc: FakeDiscord, **over: object) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    svc_env.env.update(AIWG_TELEGRAM_TOKEN=TG_TOKEN, AIWG_TELEGRAM_CHAT_ID="777",
                       AIWG_SLACK_BOT_TOKEN=BOT_TOKEN, AIWG_SLACK_APP_TOKEN=APP_TOKEN, AIWG_SLACK_CHANNEL="C100",
                       AIWG_DISCORD_TOKEN=DISCORD_TOKEN, AIWG_DISCORD_CHANNEL_ID="4242")
    write_service_config(svc_env, section(tg, slack, dc, **over))


def test_a_plain_private_message_is_a_question_everywhere(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg, FakeSlack() as slack, FakeDiscord() as dc:
        start(svc_env, tg, slack, dc)
        svc_env.start()
        wait_for(lambda: svc_env.call("messaging.status")["connected"] == 3, 30, what="three bridges up")
        tg.push_message(WRITER, "what is up")
        tg.wait(lambda: any("Done: what is up" in t for t in tg.texts(WRITER)), 60, what="telegram's answer")
        slack.push_dm("U1", "hello slack")
        slack.wait(lambda: any("Done: hello slack" in t for t in slack.texts("D100")), 60, what="slack's answer")
        dc.push_message("7001", "hello discord")
        dc.wait(lambda: any("Done: hello discord" in t for t in dc.replies()), 60, what="discord's answer")
        tg.push_message(WRITER, "status")  # a command's name, without the slash, is that command
        tg.wait(lambda: any("aiwg status" in t for t in tg.texts(WRITER)), 30, what="/status")
        assert not any("Unknown command" in t for t in tg.texts(WRITER) + slack.texts() + dc.replies())
        # the setting turns it off: a plain message is then ignored, with a log line
        write_service_config(svc_env, section(tg, slack, dc, plain_messages_ask=False))
        assert svc_env.call("daemon.reload")["reloaded"] is True
        tg.push_message(WRITER, "not a question")
        wait_for(lambda: "ignored a plain message" in svc_env.log_text(), 20, what="the log line")
        tg.push_message(WRITER, "/help")
        tg.wait(lambda: any("aiwg commands" in t for t in tg.texts(WRITER)), 30, what="/help")
        assert not any("not a question" in t for t in tg.texts(WRITER))
        assert len(svc_env.call("task.list", {"source": "messaging"})) == 3
        assert svc_env.stop() == 0


def test_refusals_go_to_who_acted_once_per_burst_and_buttons_stay(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg, FakeSlack() as slack, FakeDiscord() as dc:
        start(svc_env, tg, slack, dc, rate_limit={"commands": 3, "per_seconds": 600})
        svc_env.write_project_config({
            "watch": {"debounce_ms": 0, "paths": [{"path": "inbox/", "events": ["create"]}]},
            "schedule": {"jobs": []},
            "rules": [{"id": "deploy", "triggers": [{"type": "file.create"}], "mode": "parallel",
                       "actions": [{"approve": {"message": "deploy {path}?"}}, {"shell": "true"}]}],
        })
        (svc_env.project / "inbox").mkdir()
        svc_env.start()
        wait_for(lambda: svc_env.call("messaging.status")["connected"] == 3, 30, what="three bridges up")
        # a burst of ten commands over a limit of three: three answers and one refusal, not seven
        for _ in range(10):
            tg.push_message(WRITER, "/help")
        wait_for(lambda: svc_env.call("messaging.status")["commands"]["rate_limited"] == 7, 30,
                 what="seven commands over the limit")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 4, what="the answers")
        texts = tg.texts(WRITER)
        assert sum("aiwg commands" in t for t in texts) == 3 and sum("Rate limit exceeded" in t for t in texts) == 1

        (svc_env.project / "inbox" / "a").write_text("")
        prompt = tg.wait(lambda: next((m for m in tg.sent if m.get("reply_markup")), None), what="telegram prompt")
        data = prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        approval_id = data.split(":", 1)[1]
        tg.push_callback(READER, data, message_id=prompt["message_id"])  # a read-only user presses Approve
        alert = tg.wait(lambda: next((a for a in tg.callback_answers if a.get("show_alert")), None),
                        what="the refusal as an alert to the presser")
        assert "needs write permission" in alert["text"]
        slack_prompt = slack.wait(lambda: next((p for p in slack.posts if "actions" in str(p.get("blocks"))), None),
                                  what="slack prompt")
        slack.push_button("U2", "approve", approval_id)
        eph = slack.wait(lambda: slack.ephemeral, what="slack's ephemeral refusal")[0]
        assert eph["user"] == "U2" and "needs write permission" in eph["text"]
        dc_prompt = dc.wait(lambda: next((m for m in dc.messages if m.get("components")), None), what="discord prompt")
        dc.push_component("7002", dc_prompt["components"][0]["components"][0]["custom_id"])
        private = dc.wait(lambda: [f for f in dc.followups if f.get("flags") == 64], what="discord's ephemeral refusal")
        assert "needs write permission" in str(private[0])
        # nothing public was said, the approval is still pending and every prompt keeps its buttons
        assert [a["id"] for a in svc_env.call("approval.list", {})["approvals"]] == [approval_id]  # still pending
        assert not tg.edits and not slack.updates and not dc.edits
        assert not any("needs write" in t for t in tg.texts() + slack.texts())
        assert slack_prompt in slack.posts and dc_prompt.get("components")
        # a writer decides from the CLI: every prompt everywhere shows it and loses its buttons
        assert svc_env.ctl("approve", approval_id).returncode == 0
        tg.wait(lambda: tg.edits, what="the telegram prompt updated")
        slack.wait(lambda: slack.updates, what="the slack prompt updated")
        dc.wait(lambda: dc.edits, what="the discord prompt updated")
        assert tg.edits[0]["reply_markup"] == {"inline_keyboard": []} and "→ approved" in tg.edits[0]["text"]
        assert dc.edits[0]["components"] == []
        assert svc_env.stop() == 0
