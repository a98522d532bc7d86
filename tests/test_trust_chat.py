"""Issue 22, finding 9: a conversation belongs to where it started. ``aiwgctl chat`` continues only terminal
conversations; a chat bridge's is reachable by its id, read-only unless ``--take``.

The real service, the fake Telegram, the fake claude, and the REPL in a real tmux pane.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fake_telegram import FakeTelegram
from messaging_support import WRITER, start_with_telegram
from service_fixture import BIN, ServiceEnv
from tasks_support import make_fakebin
from tmux_support import Tmux


@pytest.fixture
def tmux(svc_env: ServiceEnv) -> Iterator[Tmux]:
    t = Tmux(svc_env.tmp / "tmux.sock", {**svc_env.env, "TERM": "xterm-256color"})
    yield t
    t.kill()


def test_the_terminal_never_continues_a_telegram_conversation(svc_env: ServiceEnv, tmux: Tmux) -> None:
    svc_env.env["PATH"] = f"{make_fakebin(svc_env.tmp)}:{svc_env.env['PATH']}"
    svc_env.env["HOME"] = str(svc_env.tmp / "home")
    with FakeTelegram() as tg:
        start_with_telegram(svc_env, tg.base)
        res = svc_env.ctl("chat", "--new", "-m", "terminal says hi", check=True)
        mine = res.stderr.split()[1]
        tg.push_message(WRITER, "/ask the telegram secret is teal")
        tg.wait(lambda: tg.texts(WRITER), 60, what="the telegram answer")
        convs = svc_env.call("chat.list", {})["conversations"]
        theirs = next(c["id"] for c in convs if c["key"] == f"telegram:{WRITER}")
        assert convs[0]["id"] == theirs  # the telegram one is the last used

        # the REPL opens the terminal's own conversation, not the chat's
        tmux.new("repl", [str(BIN / "aiwgctl"), "chat"], svc_env.project)
        screen = tmux.wait("repl", "you>")
        assert f"conversation {mine}" in screen and theirs not in screen
        tmux.type("repl", "what did telegram say?")
        screen = tmux.wait("repl", "Done: what did telegram say?")
        assert "teal" not in screen
        tmux.keys("repl", "C-d")
        assert len(tg.texts(WRITER)) == 1  # nothing typed here was answered into telegram

        # by explicit id: readable, but not writable without --take
        hist = svc_env.call("chat.history", {"conversation": theirs})
        assert hist["turns"][0]["message"] == "the telegram secret is teal"
        res = svc_env.ctl("chat", theirs, "-m", "hijack")
        assert res.returncode == 1 and f"belongs to the chat telegram:{WRITER}: it is read-only here" in res.stderr
        assert len(svc_env.call("chat.history", {"conversation": theirs})["turns"]) == 1
        res = svc_env.ctl("chat", theirs, "--take", "-m", "mine now", check=True, timeout=60)
        assert len(svc_env.call("chat.history", {"conversation": theirs})["turns"]) == 2
        # the chat starts afresh: its next /ask is turn 1 of a new conversation
        tg.push_message(WRITER, "/ask again")
        tg.wait(lambda: len(tg.texts(WRITER)) >= 2, 60, what="the next telegram answer")
        assert "turn 1 of session" in tg.texts(WRITER)[-1]
        keyed = [c for c in svc_env.call("chat.list", {})["conversations"] if c["key"] == f"telegram:{WRITER}"]
        assert len(keyed) == 1 and keyed[0]["id"] != theirs
        assert json.dumps(svc_env.call("chat.list", {"terminal": True})).count("telegram:") == 0
