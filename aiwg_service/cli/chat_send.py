"""Sending a chat message once across the service's restarts, and ``aiwgctl chat -m`` (one message, its
answer, an exit status), shared with the REPL (``chat_repl``)."""

from __future__ import annotations

import sys
from typing import Any

from .chat_render import Spinner, Style, TurnPrinter, follow_turn, is_tty
from .chat_rpc import AsyncRpc, Link

__all__ = ["EXIT", "one_shot", "send_once", "watch_tasks"]


def _socket() -> str:
    from .core import resolve_socket

    return resolve_socket()


#: ``chat -m``'s exit status: 0 the turn completed, 2 it is held by a budget (it waits in the queue), else 1
EXIT = {"completed": 0, "held": 2}


def _status_to_stderr(state: str, gone: float) -> None:
    if state == "down":
        sys.stderr.write("aiwgctl: the service went away; reconnecting…\n")
    else:
        sys.stderr.write(f"aiwgctl: reconnected to the service (after {gone:.1f} s)\n")
    sys.stderr.flush()


async def watch_tasks(link: Link) -> None:
    """Task events on this connection and every later one (holds, turns started elsewhere)."""
    async def subscribe(rpc: AsyncRpc) -> None:
        await rpc.call("events.subscribe", {"type": "task.*"})

    link.on_up(subscribe)
    await subscribe(await link.current())


async def send_once(link: Link, params: dict[str, Any], known_turns: int) -> dict[str, Any]:
    """``chat.send`` exactly once, across a loss of the service: sent only on a live connection, and if
    the connection dropped before the reply, the conversation is read to see whether the turn was taken
    (it then is followed) before sending again."""
    while True:
        try:
            return dict(await link.call("chat.send", params, resend=False))
        except ConnectionError:
            taken = await _turn_taken(link, params, known_turns)
            if taken is not None:
                return taken


async def _turn_taken(link: Link, params: dict[str, Any], known_turns: int) -> dict[str, Any] | None:
    conv = params.get("conversation")
    if conv is None:  # a new conversation: the newest one, if it holds just this message
        res = await link.call("chat.list", {"project": params.get("project"), "limit": 1})
        convs = res.get("conversations", [])
        if not convs or convs[0].get("turns") != 1:
            return None
        conv, known_turns = convs[0]["id"], 0
    h = await link.call("chat.history", {"conversation": conv})
    for t in h.get("turns", [])[known_turns:]:
        if t.get("message") == params["message"] and t.get("taskId"):
            return {"conversation": h["id"], "turn": t["n"], "taskId": t["taskId"]}
    return None


async def one_shot(message: str, conversation: str | None, project: str | None, take: bool = False) -> int:
    """Send one message, print the answer as it streams, exit 0 if the turn completed, 2 if a budget holds
    it, else 1.  The service may restart meanwhile: the message is sent once and the turn followed on."""
    link = await Link.open(_socket(), _status_to_stderr)
    try:
        await watch_tasks(link)
        known = 0
        if conversation is not None:
            known = len((await link.call("chat.history", {"conversation": conversation}))["turns"])
        res = await send_once(link, {"message": message, "conversation": conversation, "project": project,
                                     **({"take": True} if take else {})}, known)
        printer = TurnPrinter(lambda s: (sys.stdout.write(s), sys.stdout.flush()), Style(is_tty(sys.stdout)))
        head = f"conversation {res['conversation']} turn {res['turn']}"

        why: list[str] = []
        state = await follow_turn(link, res["taskId"], printer, Spinner(sys.stderr, is_tty(sys.stderr)),
                                  on_held=why.append, stop_when_held=True)
        if state == "held":
            sys.stderr.write(f"{head}: held: {why[-1]}\n(task {res['taskId']} waits in the queue; "
                             f"`aiwgctl task cancel {res['taskId']}` cancels it)\n")
            return EXIT["held"]
        sys.stderr.write(f"{head}: {state}\n")
        if state != "completed":
            t = await link.call("task.get", {"taskId": res["taskId"]})
            if t.get("error"):
                sys.stderr.write(f"aiwgctl: {t['error']}\n")
        return EXIT.get(state, 1)
    finally:
        await link.close()
