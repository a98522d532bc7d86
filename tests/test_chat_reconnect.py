"""The chat REPL, ``chat -m`` and the dashboard ride out a ``kill -9`` and a restart of the service, as a person
sees it in tmux: one status line while it is away, a line typed meanwhile answered once, the turn in flight
followed to its end; a turn held by a budget says so; a turn started elsewhere is shown and can be cancelled."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest
from service_fixture import BIN, ServiceEnv, wait_for
from test_chat_service import start_chat_service
from tmux_support import Tmux


@pytest.fixture
def chat(svc_env: ServiceEnv) -> ServiceEnv:
    return start_chat_service(svc_env)


@pytest.fixture
def tmux(svc_env: ServiceEnv) -> Iterator[Tmux]:
    t = Tmux(svc_env.tmp / "tmux.sock", {**svc_env.env, "TERM": "xterm-256color"})
    yield t
    t.kill()


def turns(env: ServiceEnv) -> list[dict]:
    conv = env.call("chat.list", {})["conversations"][0]
    return env.call("chat.history", {"conversation": conv["id"]})["turns"]


def test_repl_rides_out_a_kill_9_and_a_line_typed_meanwhile_is_answered_once(chat: ServiceEnv, tmux: Tmux) -> None:
    tmux.new("repl", [str(BIN / "aiwgctl"), "chat", "--new"], chat.project)
    tmux.wait("repl", "you>")
    tmux.type("repl", "first sleep=4")
    tmux.wait_after("repl", "first sleep=4", "Working on it.")
    chat.stop(signal.SIGKILL)
    tmux.wait("repl", "the service went away: reconnecting")
    tmux.type("repl", "typed while down")
    tmux.wait("repl", "(queued #1: sent when the turn in flight ends)")
    chat.start()
    screen = tmux.wait("repl", "Done: typed while down")
    assert "reconnected to the service after" in screen
    assert screen.count("Done: first sleep=4") == 1 and screen.count("Working on it.") == 2  # nothing twice
    assert "went away: reconnecting" not in screen  # the status line is gone once it is back
    got = turns(chat)
    assert [(t["message"], t["state"]) for t in got] == [("first sleep=4", "completed"),
                                                         ("typed while down", "completed")]
    # a second loss while idle: a line typed while it is away goes once it is back, not before, not twice
    chat.stop(signal.SIGKILL)
    tmux.wait("repl", "the service went away: reconnecting")
    tmux.type("repl", "while idle")
    chat.start()
    screen = tmux.wait("repl", "Done: while idle")
    assert [t["message"] for t in turns(chat)] == ["first sleep=4", "typed while down", "while idle"]


def test_repl_queues_messages_behind_a_turn_and_shows_a_turn_started_elsewhere(chat: ServiceEnv, tmux: Tmux) -> None:
    tmux.new("repl", [str(BIN / "aiwgctl"), "chat", "--new"], chat.project)
    tmux.wait("repl", "you>")
    tmux.type("repl", "one sleep=3")
    tmux.wait_after("repl", "one sleep=3", "Working on it.")
    tmux.type("repl", "two")
    tmux.wait("repl", "(queued #1")
    tmux.type("repl", "/queue")
    tmux.wait("repl", "#1 two")
    tmux.wait("repl", "Done: two")
    assert [t["message"] for t in turns(chat)] == ["one sleep=3", "two"]
    conv = chat.call("chat.list", {})["conversations"][0]["id"]
    # another client starts a turn of this conversation: the REPL shows it and /cancel cancels it
    other = subprocess.Popen([str(BIN / "aiwgctl"), "chat", conv, "-m", "elsewhere sleep=30"], env=chat.env,
                             cwd=chat.project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tmux.wait("repl", "was started elsewhere")
        tmux.wait_after("repl", "was started elsewhere", "Working on it.")
        tmux.type("repl", "/cancel")
        tmux.wait("repl", "cancelled")
        assert other.wait(20) == 1
    finally:
        other.kill()
    assert turns(chat)[-1]["state"] == "cancelled"


def test_one_shot_follows_its_turn_across_a_kill_9(chat: ServiceEnv) -> None:
    proc = subprocess.Popen([str(BIN / "aiwgctl"), "chat", "--new", "-m", "slow one sleep=3"], env=chat.env,
                            cwd=chat.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: chat.call("task.list", {"state": "running"}), 20, what="the turn to run")
        chat.stop(signal.SIGKILL)
        chat.start()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.count("Done: slow one") == 1 and out.count("Working on it.") == 1
    assert "reconnecting" in err and "reconnected to the service" in err and "Traceback" not in err


def test_a_held_turn_says_so_in_the_repl_and_with_m(svc_env: ServiceEnv, tmux: Tmux) -> None:
    svc_env.write_project_config({"budgets": {"project_daily_usd": 0.01}})
    start_chat_service(svc_env)
    res = svc_env.ctl("chat", "--new", "-m", "spend it")  # $0.0123: over the day's $0.01 afterwards
    assert res.returncode == 0, res.stderr
    res = svc_env.ctl("chat", "--new", "-m", "one more")
    assert res.returncode == 2, res.stderr
    assert "held: project.daily budget" in res.stderr and "aiwgctl task cancel" in res.stderr
    tmux.new("repl", [str(BIN / "aiwgctl"), "chat", "--new"], svc_env.project)
    tmux.wait("repl", "you>")
    tmux.type("repl", "and another")
    tmux.wait("repl", "held: project.daily budget")
    tmux.wait("repl", "held you>")
    tmux.type("repl", "/cancel")
    tmux.wait("repl", "cancelled")
    tmux.wait_prompt("repl", "you>")


def test_dashboard_panes_ride_out_a_kill_9_and_the_tmux_server_lives(chat: ServiceEnv) -> None:
    tmux = Tmux(chat.runtime / "aiwg" / "tmux.sock", chat.env)
    try:
        assert "aiwg: created" in chat.ctl("attach", "--detach", check=True).stdout
        top, repl = "=aiwg:.{bottom}", "=aiwg:.{top}"

        def pane(target: str) -> str:
            return tmux.run("capture-pane", "-p", "-J", "-t", target).stdout

        wait_for(lambda: "aiwg top" in pane(top), 20, what="top to draw")
        wait_for(lambda: "you>" in pane(repl), 20, what="the REPL")
        server = tmux.run("display-message", "-p", "#{pid}").stdout.strip()
        chat.stop(signal.SIGKILL)
        wait_for(lambda: "the service went away" in pane(top), 20, what="top's status line")
        wait_for(lambda: "the service went away: reconnecting" in pane(repl), 20, what="the REPL's status line")
        tmux.run("send-keys", "-t", repl, "-l", "typed in the dashboard")
        tmux.run("send-keys", "-t", repl, "Enter")
        chat.start()
        wait_for(lambda: "Done: typed in the dashboard" in pane(repl), 30, what="the answer in the dashboard")
        wait_for(lambda: "went away" not in pane(top), 20, what="top to redraw without the status line")
        task = chat.call("task.submit", {"prompt": "echo hi", "agent": "shell"})
        wait_for(lambda: task["taskId"] in pane(top), 20, what="top to follow events again")
        assert tmux.run("display-message", "-p", "#{pid}").stdout.strip() == server  # the same tmux server
        panes = tmux.run("list-panes", "-t", "=aiwg:", "-F", "#{pane_dead}").stdout.split()
        assert panes == ["0", "0"]
        assert [t["message"] for t in turns(chat)].count("typed in the dashboard") == 1
        assert "aiwg: running" in chat.ctl("attach", "--detach", check=True).stdout  # healthy: left alone
    finally:
        tmux.kill()
