"""Approval prompts on every chat platform, decided once, by button or command, through the real gates."""

from __future__ import annotations

from fake_discord import TOKEN as DISCORD_TOKEN
from fake_discord import FakeDiscord
from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from fake_telegram import FakeTelegram
from messaging_support import TG_TOKEN, WRITER, write_service_config
from service_fixture import ServiceEnv, wait_for


def test_approval_buttons_on_every_platform_decided_once(svc_env: ServiceEnv) -> None:
    with FakeTelegram() as tg, FakeSlack() as slack, FakeDiscord() as dc:
        svc_env.env.update(AIWG_TELEGRAM_TOKEN=TG_TOKEN, AIWG_TELEGRAM_CHAT_ID="777",
                           AIWG_SLACK_BOT_TOKEN=BOT_TOKEN, AIWG_SLACK_APP_TOKEN=APP_TOKEN, AIWG_SLACK_CHANNEL="C100",
                           AIWG_DISCORD_TOKEN=DISCORD_TOKEN, AIWG_DISCORD_CHANNEL_ID="4242")
        write_service_config(svc_env, {
            "users": {f"telegram:{WRITER}": "write", "slack:U1": "write", "discord:7001": "write"},
            "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 5},
            "slack": {"api_base_url": slack.base + "/api/", "ping_interval_seconds": 1},
            "discord": {"api_base_url": dc.api}, "apprise": {"enabled": False},
        })
        svc_env.write_project_config({
            "watch": {"debounce_ms": 0, "paths": [{"path": "inbox/", "events": ["create"]}]},
            "schedule": {"jobs": []},
            "rules": [{"id": "deploy", "triggers": [{"type": "file.create"}], "mode": "parallel",
                       "actions": [{"approve": {"message": "deploy {path}?"}},
                                   {"shell": "touch \"approved-$(basename \"$AIWG_EVENT_PATH\")\""}]}],
        })
        (svc_env.project / "inbox").mkdir()
        svc_env.start()
        wait_for(lambda: svc_env.call("messaging.status")["connected"] == 3, 20, what="three bridges up")
        (svc_env.project / "inbox" / "a").write_text("")
        # the prompt reaches all three, with buttons
        tg.wait(lambda: [m for m in tg.sent if m.get("reply_markup")], what="telegram prompt")
        slack.wait(lambda: [p for p in slack.posts if p.get("channel") == "C100"], what="slack prompt")
        dc.wait(lambda: [m for m in dc.messages if m.get("components")], what="discord prompt")
        prompt = next(m for m in tg.sent if m.get("reply_markup"))
        approve_data = prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        approval_id = approve_data.split(":", 1)[1]
        assert "deploy inbox/a?" in prompt["text"]
        slack_actions = slack.posts[0]["blocks"][-1]["elements"]
        assert [a["action_id"] for a in slack_actions] == ["aiwg_approve", "aiwg_reject"]
        assert slack_actions[0]["value"] == approval_id
        # decided from Slack's button; the Telegram button afterwards hears it was decided already
        slack.push_button("U1", "approve", approval_id)
        wait_for(lambda: (svc_env.project / "approved-a").exists(), 20, what="the approved action")
        tg.push_callback(WRITER, approve_data, message_id=prompt["message_id"])
        tg.wait(lambda: any("already approved by slack:U1" in t for t in tg.texts(777)), what="already decided")
        assert tg.callbacks_answered  # the button's spinner was stopped
        # every prompt (Telegram's, Discord's, Slack's own) shows the outcome and has no buttons left
        tg.wait(lambda: tg.edits, what="the telegram prompt edited")
        assert "approved by slack:U1" in tg.edits[0]["text"]
        assert tg.edits[0]["reply_markup"] == {"inline_keyboard": []}
        dc.wait(lambda: dc.edits, what="the discord prompt edited")
        assert dc.edits[0]["components"] == [] and "approved by slack:U1" in str(dc.edits[0]["embeds"])
        slack.wait(lambda: slack.updates, what="the slack prompt edited")
        assert "approved by slack:U1" in slack.updates[0]["text"] and "actions" not in str(slack.updates[0]["blocks"])
        assert len(tg.edits) == 1 and "editMessageText" not in svc_env.log_text()
        # a second approval, rejected by a Discord button
        (svc_env.project / "inbox" / "b").write_text("")
        dc.wait(lambda: len([m for m in dc.messages if "Approval needed" in str(m)]) >= 2, what="second discord prompt")
        second = [m for m in dc.messages if "Approval needed" in str(m)][1]
        custom_id = second["components"][0]["components"][1]["custom_id"]
        assert custom_id.startswith("aiwg:reject:ap-")
        dc.push_component("7001", custom_id)
        dc.wait(lambda: any("rejected by discord:7001" in (f.get("content") or "") for f in dc.followups),
                what="the rejection reply")
        decided = {a["id"]: a for a in svc_env.call("approval.list", {"state": "all"})["approvals"]}
        assert decided[approval_id]["state"] == "approved" and decided[approval_id]["decided_by"] == "slack:U1"
        assert decided[custom_id.rsplit(":", 1)[1]]["state"] == "rejected"
        assert not (svc_env.project / "approved-b").exists()
        assert svc_env.stop() == 0
