"""Discord end to end: the real service (discord.py) against a local REST API and gateway."""

from __future__ import annotations

import json

from fake_discord import TOKEN, FakeDiscord
from messaging_support import write_service_config
from service_fixture import ServiceEnv, wait_for


def _start(svc_env: ServiceEnv, dc: FakeDiscord) -> None:
    svc_env.env.update(AIWG_DISCORD_TOKEN=TOKEN, AIWG_DISCORD_CHANNEL_ID="4242")
    write_service_config(svc_env, {
        "users": {"discord:7001": "write", "discord:7002": "read"},
        "discord": {"api_base_url": dc.api},
        "telegram": {"enabled": False}, "slack": {"enabled": False}, "apprise": {"enabled": False},
    })
    svc_env.start()
    wait_for(lambda: svc_env.call("messaging.status")["bridges"]["discord"]["state"] == "connected", 20,
             what="discord connected")


def test_slash_dm_mention_and_notify(svc_env: ServiceEnv) -> None:
    with FakeDiscord() as dc:
        _start(svc_env, dc)
        dc.wait(lambda: dc.commands, what="slash commands registered")
        assert {c["name"] for c in dc.commands} >= {"help", "status", "ask", "approve", "reject", "cancel"}
        iid = dc.push_slash("7001", "status")
        dc.wait(lambda: any(f["kind"] == "edit" for f in dc.followups), what="the /status answer")
        assert dc.callbacks[0]["id"] == iid and dc.callbacks[0]["type"] == 5  # deferred at once
        assert "aiwg status" in dc.followups[0]["content"] and dc.followups[0]["kind"] == "edit"
        # a DM and an @mention in a guild channel; a guild message without a mention is not for us
        dc.push_message("7002", "help", channel="4001")
        dc.push_message("7002", "tasks", channel="4002", guild=True, mention=True)
        dc.push_message("7002", "status", channel="4003", guild=True)
        dc.wait(lambda: {m["channel_id"] for m in dc.messages} >= {"4001", "4002"}, what="DM and mention replies")
        assert not [m for m in dc.messages if m["channel_id"] == "4003"]
        # a stranger gets the refusal; display names are never trusted
        dc.push_message("6666", "status", channel="4004")
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "4004"], what="refusal")
        assert "not allowed" in next(m for m in dc.messages if m["channel_id"] == "4004")["content"]
        svc_env.ctl("notify", "**bold** @everyone", "--channel", "discord", check=True)
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "4242"], what="notify to the channel")
        sent = next(m for m in dc.messages if m["channel_id"] == "4242")
        assert sent["embeds"][0]["description"] == "\\*\\*bold\\*\\* @\u200beveryone"
        assert svc_env.stop() == 0


def test_gateway_drop_resume_neither_loses_nor_repeats(svc_env: ServiceEnv) -> None:
    with FakeDiscord() as dc:
        _start(svc_env, dc)
        dc.push_message("7001", "help", channel="5001")
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "5001"], what="first reply")
        dc.resume_overlap = 2  # the server replays two events the client already had
        dc.drop()
        dc.push_message("7001", "status", channel="5002")  # sent while the connection is down
        dc.wait(lambda: dc.resumes, 30, what="a RESUME")
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "5002"], 30, what="the missed command")
        assert dc.identifies == 1  # resumed, not re-identified
        wait_for(lambda: svc_env.call("messaging.status")["bridges"]["discord"]["state"] == "connected", 10,
                 what="connected again")
        assert len([m for m in dc.messages if m["channel_id"] == "5001"]) == 1
        assert len([m for m in dc.messages if m["channel_id"] == "5002"]) == 1
        assert "discord delivered msg:" in svc_env.log_text()  # the replayed event was recognised and skipped
        assert svc_env.stop() == 0


def test_a_read_only_user_cannot_run_a_write_command_and_health_answers(svc_env: ServiceEnv) -> None:
    with FakeDiscord() as dc:
        _start(svc_env, dc)
        dc.push_message("7002", "cancel t-1", channel="4101")  # 7002 may only read
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "4101"], what="the write refusal")
        assert "needs write permission" in next(m for m in dc.messages if m["channel_id"] == "4101")["content"]
        dc.push_message("7002", "health", channel="4102")
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "4102"], what="the /health answer")
        health = next(m for m in dc.messages if m["channel_id"] == "4102")
        text = health["content"] + json.dumps(health.get("embeds", []))
        assert "supervisor:" in text and "bridge discord: connected" in text


def test_429s_keep_order_and_an_answer_outliving_its_interaction_token_goes_to_the_channel(
        svc_env: ServiceEnv) -> None:
    from tasks_support import make_fakebin

    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeDiscord() as dc:
        _start(svc_env, dc)
        dc.rate_limit_next = 2  # Discord says 429 twice: Retry-After is honoured and the order kept
        for i in range(4):
            svc_env.ctl("notify", f"n{i}", "--channel", "discord", check=True)
        dc.wait(lambda: len([m for m in dc.messages if m["channel_id"] == "4242"]) >= 4, 30, what="four messages")
        got = [m["embeds"][0]["description"] for m in dc.messages if m["channel_id"] == "4242"]
        assert got == ["n0", "n1", "n2", "n3"] and len(dc.rate_limited) == 2
        # an /ask whose answer comes after the interaction token expired: posted to the channel instead
        dc.push_slash("7001", "ask", "slow one sleep=2", channel="4100")
        dc.wait(lambda: dc.callbacks and any(c["type"] == 5 for c in dc.callbacks), what="the deferral")
        dc.expire_interactions()
        dc.wait(lambda: [m for m in dc.messages if m["channel_id"] == "4100"], 60, what="the answer in the channel")
        answer = next(m for m in dc.messages if m["channel_id"] == "4100")
        assert "Done: slow one" in str(answer)
        assert not any("Done: slow one" in str(f) for f in dc.followups)
        assert svc_env.stop() == 0
