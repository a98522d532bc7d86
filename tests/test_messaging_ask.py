"""/ask through the chat bridges: the real service, the real conversations, the fake claude."""

from __future__ import annotations

import re

from fake_telegram import FakeTelegram
from messaging_support import TG_TOKEN, WRITER, start_with_telegram, write_service_config
from service_fixture import ServiceEnv
from tasks_support import make_fakebin

SESSION = re.compile(r"turn (\d+) of session ([0-9a-f-]+)")


def test_ask_keeps_one_resumed_session_per_chat(svc_env: ServiceEnv) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base, working_notice_seconds=1)
        tg.push_message(WRITER, "/ask what is 2+2")
        tg.wait(lambda: tg.texts(WRITER), 60, what="the first answer")
        first = tg.texts(WRITER)[0]
        assert first.startswith("Done: what is 2+2") and "earlier: -" in first
        turn, session = SESSION.search(first).groups()  # type: ignore[union-attr]
        assert turn == "1"
        # the second question resumes the same session; it takes 2 s, so "working…" comes first
        tg.push_message(WRITER, "/ask and now sleep=2")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 3, 60, what="working… and the second answer")
        working, second = tg.texts(WRITER)[1:3]
        assert working == "working…"
        assert SESSION.search(second).groups() == ("2", session) and "earlier: what is 2+2" in second  # type: ignore
        # another chat (a group) has its own conversation
        tg.push_message(WRITER, "/ask hello group", chat_id=-100)
        tg.wait(lambda: tg.texts(-100), 60, what="the group's answer")
        assert SESSION.search(tg.texts(-100)[0]).group(1) == "1"  # type: ignore[union-attr]
        assert SESSION.search(tg.texts(-100)[0]).group(2) != session  # type: ignore[union-attr]
        tasks = svc_env.call("task.list", {"source": "messaging"})
        assert len(tasks) == 3 and all(t["state"] == "completed" for t in tasks)
        assert svc_env.stop() == 0


def test_kill_9_during_an_ask_delivers_the_answer_of_the_re_adopted_turn(svc_env: ServiceEnv) -> None:
    import signal

    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeTelegram() as tg:
        svc_env.env.update(AIWG_TELEGRAM_TOKEN=TG_TOKEN, AIWG_TELEGRAM_CHAT_ID="777")
        write_service_config(svc_env, {
            "users": {f"telegram:{WRITER}": "write"}, "working_notice_seconds": 0.5,
            "telegram": {"api_base_url": tg.base, "poll_timeout_seconds": 5},
            "slack": {"enabled": False}, "discord": {"enabled": False}, "apprise": {"enabled": False},
        }, daemon={"stop_timeout_seconds": 1})
        svc_env.start()
        tg.push_message(WRITER, "/ask think hard sleep=4")
        tg.wait(lambda: "working…" in tg.texts(WRITER), 30, what="working…")
        svc_env.stop(signal.SIGKILL)
        svc_env.start()
        # the agent outlived the service and was re-adopted: its answer reaches the chat that asked, once
        tg.wait(lambda: any("Done: think hard" in t for t in tg.texts(WRITER)), 60, what="the answer")
        tasks = svc_env.call("task.list", {"source": "messaging"})
        assert len(tasks) == 1 and tasks[0]["state"] == "completed"  # paid for once
        assert svc_env.stop() == 0
        texts = tg.texts(WRITER)
        assert sum("Done: think hard" in t for t in texts) == 1 and not any("restarted" in t for t in texts)


def test_long_answers_say_which_task_holds_all_of_it(svc_env: ServiceEnv) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base)
        tg.push_message(WRITER, "/ask say a lot long=10000")
        tg.wait(lambda: tg.texts(WRITER), 60, what="the answer")
        answer = tg.texts(WRITER)[-1]
        task = svc_env.call("task.list", {"source": "messaging"})[0]
        assert len(answer) <= 4096 and answer.endswith(f"(cut; the whole answer: aiwgctl task logs {task['id']})")
        assert svc_env.stop() == 0


def test_a_held_ask_says_so_in_the_chat(svc_env: ServiceEnv) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    svc_env.write_project_config({"budgets": {"project_daily_usd": 0.01}})
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base, working_notice_seconds=0.5)
        tg.push_message(WRITER, "/ask spend it")  # $0.0123: the day's $0.01 is spent afterwards
        tg.wait(lambda: any("Done: spend it" in t for t in tg.texts(WRITER)), 60, what="the first answer")
        tg.push_message(WRITER, "/ask one more")
        held = tg.wait(lambda: next((t for t in tg.texts(WRITER) if t.startswith("held:")), None), 30,
                       what="held: in the chat")
        task = next(t for t in svc_env.call("task.list", {"source": "messaging"}) if t["state"] == "held")
        assert "project.daily budget" in held and f"/cancel {task['id']}" in held
        after = tg.texts(WRITER)[next(i for i, t in enumerate(tg.texts(WRITER)) if "Done: spend it" in t) + 1:]
        assert "working…" not in after  # the held turn says why it waits, not "working…"
        assert svc_env.stop() == 0


def test_a_question_while_one_is_answered_waits_behind_it(svc_env: ServiceEnv) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base, working_notice_seconds=60)
        tg.push_message(WRITER, "/ask first sleep=2")
        tg.wait(lambda: svc_env.call("task.list", {"source": "messaging"}), 30, what="the first turn queued")
        tg.push_message(WRITER, "/ask second")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 2, 60, what="both answers")
        first, second = tg.texts(WRITER)[:2]
        assert first.startswith("Done: first") and second.startswith("Done: second")
        assert SESSION.search(second).group(1) == "2"  # type: ignore[union-attr]  # the same session, next turn
        assert not any("still answering" in t for t in tg.texts(WRITER))
        assert svc_env.stop() == 0
