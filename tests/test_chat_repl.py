"""``aiwgctl chat``: the REPL driven for real in a tmux pane, and the non-interactive forms."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from service_fixture import BIN, ServiceEnv, wait_for
from test_chat_service import start_chat_service, wait_task
from tmux_support import Tmux


@pytest.fixture
def chat(svc_env: ServiceEnv) -> ServiceEnv:
    return start_chat_service(svc_env)


@pytest.fixture
def tmux(svc_env: ServiceEnv) -> Iterator[Tmux]:
    t = Tmux(svc_env.tmp / "tmux.sock", {**svc_env.env, "TERM": "xterm-256color"})
    yield t
    t.kill()


def test_repl_streams_answers_keeps_context_and_survives_ctrl_c(chat: ServiceEnv, tmux: Tmux) -> None:
    rc_file = chat.tmp / "repl.rc"
    # the exit status through a file: tmux may take its time to reap a pane's process
    tmux.new("repl", ["sh", "-c", f'"{BIN / "aiwgctl"}" chat --new; echo $? > "{rc_file}"'], chat.project)
    tmux.wait("repl", "you>")
    tmux.type("repl", "remember teal")
    screen = tmux.wait("repl", "Done: remember teal")
    assert "→ Bash: ls" in screen and "Working on it." in screen
    tmux.type("repl", "which word?")
    screen = tmux.wait("repl", "Done: which word?")
    assert re.search(r"turn 2 of session [0-9a-f-]{36}; earlier: remember teal", screen)

    tmux.type("repl", "ponder sleep=30")
    tmux.wait_after("repl", "ponder sleep=30", "→ Bash")
    tmux.keys("repl", "C-c")  # cancels the turn, not the REPL
    tmux.wait("repl", "turn 3 cancelled")
    tmux.type("repl", "/history")
    screen = tmux.wait("repl", "[3] cancelled")
    assert "[1] you: remember teal" in screen and "[2] completed: Done: which word?" in screen
    tmux.type("repl", "/cost")
    tmux.wait("repl", "over 3 turn(s)")
    tmux.type("repl", "/tasks")
    tmux.wait("repl", "cancelled  chat      ponder sleep=30")
    tmux.type("repl", "/fork 2")
    tmux.wait("repl", "forked at turn 2 into c-")
    tmux.type("repl", "/list")
    screen = tmux.wait("repl", "fork of remember teal")
    tmux.type("repl", "/bogus")
    tmux.wait("repl", "unknown command /bogus")
    tmux.wait_prompt("repl", "you>")
    tmux.keys("repl", "C-d")
    wait_for(lambda: rc_file.exists() and rc_file.read_text().strip(), 20, what="the REPL to exit")
    assert rc_file.read_text().strip() == "0"
    convs = chat.call("chat.list", {})["conversations"]
    assert len(convs) == 2 and {c["turns"] for c in convs} == {0, 3}


def test_repl_turn_in_flight_survives_the_repl_closing(chat: ServiceEnv, tmux: Tmux) -> None:
    tmux.new("r2", [str(BIN / "aiwgctl"), "chat", "--new"], chat.project)
    tmux.wait("r2", "you>")
    tmux.type("r2", "long job sleep=2")
    tmux.wait("r2", "Working on it.")
    tmux.run("kill-session", "-t", "=r2")
    conv = chat.call("chat.list", {})["conversations"][0]
    hist = chat.call("chat.history", {"conversation": conv["id"]})
    assert wait_task(chat, hist["turns"][0]["taskId"])["state"] == "completed"
    assert chat.call("chat.history", {"conversation": conv["id"]})["turns"][0]["state"] == "completed"


def test_one_shot_message_and_stdin(chat: ServiceEnv) -> None:
    res = chat.ctl("chat", "--new", "-m", "what is up")
    assert res.returncode == 0, res.stderr
    assert "Done: what is up" in res.stdout and "→ Bash: ls" in res.stdout
    conv = re.search(r"conversation (c-\S+) turn 1: completed", res.stderr).group(1)
    res = chat.ctl("chat", conv, "-m", "and then")
    assert res.returncode == 0 and "earlier: what is up" in res.stdout
    # -m without a conversation starts a new one (as the README says), never continues the last one used
    fresh = chat.ctl("chat", "-m", "alone")
    other = re.search(r"conversation (c-\S+) turn 1: completed", fresh.stderr).group(1)
    assert fresh.returncode == 0 and other != conv and "earlier: -)" in fresh.stdout  # no context carried
    piped = subprocess.run([str(BIN / "aiwgctl"), "chat", "-"], input="from a pipe\n", env=chat.env,
                           cwd=chat.project, capture_output=True, text=True, timeout=30)
    assert piped.returncode == 0 and "Done: from a pipe" in piped.stdout
    failed = chat.ctl("chat", "--new", "-m", "please fail")
    assert failed.returncode == 1 and "failed" in failed.stderr
    bad = chat.ctl("chat", "c-nosuch", "-m", "hi")
    assert bad.returncode == 1 and "no conversation 'c-nosuch'" in bad.stderr
    notty = subprocess.run([str(BIN / "aiwgctl"), "chat"], input="", env=chat.env, cwd=chat.project,
                           capture_output=True, text=True, timeout=30)
    assert notty.returncode == 1 and "needs a terminal" in notty.stderr and "Traceback" not in notty.stderr


def test_no_service_is_one_clear_line(svc_env: ServiceEnv) -> None:
    res = svc_env.ctl("chat", "--new", "-m", "hi")
    assert res.returncode == 1 and "not running" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_completer_offers_the_slash_commands() -> None:
    from prompt_toolkit.document import Document

    from aiwg_service.cli.chat_repl import COMMANDS, completer

    comp = completer()
    got = [c.text for c in comp.get_completions(Document("/h"), None)]
    assert got == ["/help", "/history"]
    assert set(COMMANDS) >= {"/help", "/status", "/history", "/tasks", "/run", "/cancel", "/quit", "/new", "/list",
                             "/switch", "/fork", "/cost"}
