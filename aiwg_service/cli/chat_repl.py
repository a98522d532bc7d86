"""``aiwgctl chat``: talk to the agent through the service, one conversation at a time.

Each message is a turn of a conversation (``chat.send``); its answer streams from the turn's task log
(``task.logs {follow}``): text as it comes, each tool call as one dim line, a spinner while nothing
arrives.  Ctrl-C cancels the turn in flight (the REPL stays); Ctrl-D quits.  A turn keeps running when
the REPL goes away (it is a task of the service); ``/history`` shows it later.

prompt_toolkit is imported only by the interactive REPL (``aiwgctl``'s start-up stays quick), and runs
on the stock asyncio loop: prompt_toolkit redraws badly under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import paths
from .. import protocol as p
from .chat_render import Spinner, Style, TurnPrinter, excerpt, follow_turn, is_tty
from .chat_rpc import Link
from .chat_send import send_once, watch_tasks

__all__ = ["COMMANDS", "repl"]

COMMANDS: dict[str, str] = {
    "/help": "this list",
    "/status": "the service's state",
    "/history": "the turns of this conversation",
    "/tasks": "recent tasks of the service",
    "/run": "/run PROMPT: queue a one-off agent task (not part of the conversation)",
    "/cancel": "/cancel [ID]: cancel the turn in flight (yours or one started elsewhere), or task ID",
    "/queue": "/queue [clear]: the messages waiting behind the turn in flight",
    "/new": "start a new conversation with the next message",
    "/list": "the conversations of this project",
    "/switch": "/switch ID: continue another conversation",
    "/fork": "/fork [TURN]: continue in a branch of this conversation",
    "/cost": "what this conversation cost so far",
    "/quit": "leave (Ctrl-D too); a turn in flight keeps running",
}


#: commands answered without the service (the others wait for it to be back)
LOCAL = frozenset({"/help", "/quit", "/exit", "/new", "/queue"})


def _socket() -> str:
    from .core import resolve_socket

    return resolve_socket()


# -- the REPL ----------------------------------------------------------------------------------------


class Repl:
    def __init__(self, link: Link, conversation: str | None, project: str | None, write: Callable[[str], None],
                 color: bool) -> None:
        self.link = link
        self.conversation = conversation
        self.project = project
        self.write = write
        self.s = Style(color)
        self.current: str | None = None  # the task of the turn in flight (ours, or one started elsewhere)
        self.job: asyncio.Task[None] | None = None  # the turns being sent and followed, one after another
        self.queue: deque[str] = deque()  # messages typed while a turn runs: sent in order behind it
        self.held: str | None = None  # why the turn in flight waits
        self.sending = False
        self.done = False
        self.take = False  # --take: continue a chat bridge's conversation here
        self.on_change: Callable[[], None] = lambda: None

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()

    def say(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")

    async def handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            if line.startswith("/"):
                await self.command(line)
            else:
                self.enqueue(line)
        except p.RpcError as exc:
            self.say(self.s.red(exc.message))
        except ConnectionError:
            self.say(self.s.red("the service went away before it answered; try again once it is back"))

    def enqueue(self, message: str) -> None:
        """A message is a turn; typed while a turn runs, it waits behind it (and is shown waiting)."""
        self.queue.append(message)
        if self.busy:
            self.say(self.s.dim(f"(queued #{len(self.queue)}: sent when the turn in flight ends)"))
        else:
            self.job = asyncio.get_running_loop().create_task(self._drain())
        self.on_change()

    async def _drain(self) -> None:
        try:
            while self.queue and not self.done:
                if self.current is not None:  # a turn started elsewhere: ours goes after it
                    await self._follow(self.current, None)
                message = self.queue.popleft()
                self.on_change()
                try:
                    await self.turn(message)
                except p.RpcError as exc:
                    data = exc.data if isinstance(exc.data, dict) else {}
                    if data.get("busy") and data.get("taskId"):  # a turn started elsewhere runs: wait, then send
                        self.queue.appendleft(message)
                        self.say(self.s.dim(f"(a turn started elsewhere is answering: task {data['taskId']}; "
                                            f"yours is queued behind it, /cancel cancels it)"))
                        await self._follow(str(data["taskId"]), None)
                        continue
                    self.say(self.s.red(exc.message))
        finally:
            self.on_change()

    async def turn(self, message: str) -> None:
        known = 0
        if self.conversation is not None:
            known = len((await self.link.call("chat.history", {"conversation": self.conversation}))["turns"])
        self.sending = True
        try:
            res = await send_once(self.link, {"message": message, "conversation": self.conversation,
                                              "project": self.project,
                                              **({"take": True} if self.take else {})}, known)
        finally:
            self.sending = False
        if res["conversation"] != self.conversation:
            self.say(self.s.dim(f"(conversation {res['conversation']})"))
        self.conversation = res["conversation"]
        await self._follow(res["taskId"], res["turn"])

    async def _follow(self, task_id: str, turn: int | None) -> None:
        self.current = task_id
        self.on_change()

        def on_held(reason: str) -> None:
            self.held = reason
            self.say(self.s.red(f"held: {reason}") + self.s.dim("  (it starts when the budget allows; "
                                                                  "Ctrl-C or /cancel cancels it)"))
            self.on_change()

        try:
            printer = TurnPrinter(self.write, self.s)
            state = await follow_turn(self.link, task_id, printer, Spinner(sys.stdout, False), on_held=on_held)
        finally:
            self.current = None
            self.held = None
        if state != "completed":
            t = await self.link.call("task.get", {"taskId": task_id})
            what = f"turn {turn}" if turn is not None else f"task {task_id}"
            self.say(self.s.red(f"{what} {state}" + (f": {t['error']}" if t.get("error") else "")))

    def on_event(self, params: dict[str, Any]) -> None:
        """A turn of this conversation started by another client (another REPL, a bridge, a script) is
        shown and followed here, and can be cancelled from here."""
        ev = params.get("event", params)
        data = ev.get("data") if isinstance(ev, dict) else None
        if not isinstance(data, dict) or ev.get("type") not in ("task.queued", "task.started"):
            return
        origin = data.get("origin") if isinstance(data.get("origin"), dict) else {}
        if (self.conversation is None or origin.get("conversation") != self.conversation or self.sending
                or data.get("id") == self.current or self.busy):
            return
        task_id = str(data["id"])
        self.say(self.s.dim(f"(turn {origin.get('turn', '?')} was started elsewhere: task {task_id}; "
                            f"following it, /cancel cancels it)"))
        self.job = asyncio.get_running_loop().create_task(self._follow_then_drain(task_id))
        self.on_change()

    async def _follow_then_drain(self, task_id: str) -> None:
        try:
            await self._follow(task_id, None)
        except ConnectionError:
            return
        if self.queue:
            await self._drain()

    async def cancel_current(self) -> None:
        if self.current is None:
            return
        if not self.link.up.is_set():  # never block the prompt on a service that is away
            self.say(self.s.dim("(the service is away: Ctrl-C again once it is back to cancel the turn)"))
            return
        with contextlib.suppress(p.RpcError, ConnectionError):
            await self.link.call("task.cancel", {"taskId": self.current}, resend=False)
        self.say(self.s.dim("(cancelling the turn…)"))

    async def command(self, line: str) -> None:
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        if cmd not in LOCAL and not self.link.up.is_set():
            self.say(self.s.dim("(the service is away, reconnecting: try that again once it is back)"))
            return
        if cmd == "/help":
            width = max(map(len, COMMANDS))
            for name, text in COMMANDS.items():
                self.say(f"{name:<{width}}  {text}")
        elif cmd in ("/quit", "/exit"):
            self.done = True
        elif cmd == "/status":
            st = await self.link.call("daemon.status")
            self.say(f"{st.get('status', '')} (pid {st['pid']}, {len(st['projects'])} project(s))")
        elif cmd == "/history":
            if self.conversation is None:
                self.say("no conversation yet: say something")
                return
            h = await self.link.call("chat.history", {"conversation": self.conversation})
            self.say(self.s.bold(f"{h['id']}: {h['title']}") + self.s.dim(f"  session {h['session_id']} "
                                                                          f"({h['session_state']})"))
            for t in h["turns"]:
                self.say(f"[{t['n']}] you: {t['message']}")
                answer = t.get("result") or t.get("error") or f"({t['state']})"
                self.say(f"[{t['n']}] {t['state']}: {answer}")
        elif cmd == "/tasks":
            res = await self.link.call("task.list", {"limit": 10})
            tasks = res if isinstance(res, list) else res.get("tasks", [])
            for t in tasks:
                self.say(f"{t['id']}  {t['state']:<9}  {t['source']:<8}  {excerpt(t['prompt'], 50)}")
            if not tasks:
                self.say("no tasks")
        elif cmd == "/run":
            if not arg:
                self.say("usage: /run PROMPT")
                return
            res = await self.link.call("task.submit", {"prompt": arg, "project": self.project})
            self.say(f"queued task {res['taskId']}")
        elif cmd == "/cancel":
            target = arg or self.current
            if target is None:
                self.say("nothing to cancel")
                return
            res = await self.link.call("task.cancel", {"taskId": target})
            self.say(f"{target}: {'cancelled' if res.get('cancelled') else 'not cancelled'} ({res.get('state')})")
        elif cmd == "/queue":
            if arg == "clear":
                self.say(f"dropped {len(self.queue)} queued message(s)")
                self.queue.clear()
                self.on_change()
            for i, m in enumerate(self.queue, 1):
                self.say(f"#{i} {excerpt(m, 100)}")
            if not self.queue and arg != "clear":
                self.say("nothing queued")
        elif cmd == "/new":
            self.conversation = None
            self.say("the next message starts a new conversation")
        elif cmd == "/list":
            res = await self.link.call("chat.list", {"project": self.project, "limit": 20})
            for c in res["conversations"]:
                mark = "*" if c["id"] == self.conversation else " "
                self.say(f"{mark} {c['id']}  {c['turns']:>3} turns  ${c['cost_usd']:.4f}  {c['last_used_at'][:16]}  "
                         f"{c['title']}" + (f"  [{c['session_state']}]" if c["session_state"] == "lost" else ""))
            if not res["conversations"]:
                self.say("no conversations")
        elif cmd == "/switch":
            if not arg:
                self.say("usage: /switch ID")
                return
            h = await self.link.call("chat.history", {"conversation": arg})
            self.conversation = h["id"]
            self.say(f"now in {h['id']}: {h['title']} ({len(h['turns'])} turns)")
        elif cmd == "/fork":
            if self.conversation is None:
                self.say("no conversation to fork")
                return
            at = int(arg) if arg.isdigit() else None
            res = await self.link.call("chat.fork", {"conversation": self.conversation, "at_turn": at})
            self.conversation = res["conversation"]
            self.say(f"forked at turn {res['at_turn']} into {res['conversation']} ({res['mode']})")
        elif cmd == "/cost":
            if self.conversation is None:
                self.say("$0.0000")
                return
            h = await self.link.call("chat.history", {"conversation": self.conversation})
            self.say(f"${h['cost_usd']:.4f} over {len(h['turns'])} turn(s)")
        else:
            self.say(f"unknown command {cmd}; /help lists them")


def completer() -> Any:
    """Tab completes the slash commands (at the start of the line only)."""
    from prompt_toolkit.completion import WordCompleter

    return WordCompleter(list(COMMANDS), sentence=True)


async def _pick_conversation(link: Link, conversation: str | None, project: str | None, new: bool) -> str | None:
    if new:
        return None
    if conversation is not None:
        h = await link.call("chat.history", {"conversation": conversation})
        return str(h["id"])
    # only a conversation started at a terminal: a chat bridge's is reached by its id, never by default
    res = await link.call("chat.list", {"project": project, "limit": 1, "terminal": True})
    convs = res.get("conversations", [])
    return str(convs[0]["id"]) if convs else None


async def repl(conversation: str | None, project: str | None, new: bool, *, input: Any = None,
               output: Any = None, take: bool = False) -> int:
    """The interactive loop.  ``input``/``output`` are prompt_toolkit's (tests pass a pipe input).

    The service may go away at any time (a restart, a ``kill -9``, an upgrade): the bottom line says so
    while it is away, lines typed meanwhile wait, and the turn in flight is followed on once it is back."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    away: list[str] = []  # the status line, while the service is away
    refresh: list[Callable[[], None]] = [lambda: None]
    repls: list[Repl] = []

    def status(state: str, gone: float) -> None:
        away[:] = ["the service went away: reconnecting… (what you type is sent once it is back)"] \
            if state == "down" else []
        if state == "up" and repls:
            repls[0].say(repls[0].s.dim(f"(reconnected to the service after {gone:.1f} s)"))
        refresh[0]()

    link = await Link.open(_socket(), status)
    try:
        conv = await _pick_conversation(link, conversation, project, new)
        hist_dir = paths.state_dir()
        hist_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        hist_file = hist_dir / "chat_history"
        fd = os.open(hist_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        os.close(fd)

        def toolbar() -> Any:
            return away[0] if away else None

        session: PromptSession[str] = PromptSession(
            history=FileHistory(str(hist_file)), completer=completer(), bottom_toolbar=toolbar,
            input=input, output=output)

        def write(s: str) -> None:
            sys.stdout.write(s)  # patch_stdout's proxy: lines appear above the prompt, never through it
            sys.stdout.flush()

        r = Repl(link, conv, project, write, is_tty(sys.stdout) and output is None)
        r.take = take
        repls.append(r)
        link.on(p.NOTIFY_EVENT, r.on_event)
        await watch_tasks(link)
        where = f"conversation {conv}" if conv else "a new conversation"
        r.say(r.s.dim(f"aiwg chat: {where}. /help for commands, Ctrl-D to quit."))
        loop = asyncio.get_running_loop()
        frame = [0]
        spinner: list[asyncio.Task[None]] = []

        def message() -> str:
            queued = f"({len(r.queue)} queued) " if r.queue else ""
            if r.busy and r.held:
                return f"held {queued}you> "
            if r.busy:
                return f"{Spinner.FRAMES[frame[0] % len(Spinner.FRAMES)]} thinking… {queued}"
            return "you> "

        async def spin() -> None:
            # Only while a turn runs: the prompt line shows a spinner; idle, nothing wakes up.
            while r.busy:
                frame[0] += 1
                session.app.invalidate()
                await asyncio.sleep(0.1)
            session.app.invalidate()

        def changed() -> None:
            if not session.app.is_running:
                return
            if r.busy and not any(not t.done() for t in spinner):
                spinner[:] = [loop.create_task(spin())]
            session.app.invalidate()

        r.on_change = changed
        refresh[0] = changed

        # The prompt stays up while a turn streams (its output goes above it), so every key reaches
        # prompt_toolkit: Ctrl-C there cancels the turn, Ctrl-D quits, and the terminal mode never races.
        with patch_stdout(raw=True):
            while not r.done:
                try:
                    line = await session.prompt_async(message)
                except KeyboardInterrupt:
                    if r.busy:
                        await r.cancel_current()
                    continue
                except EOFError:
                    break
                if not line.strip():
                    continue
                await r.handle(line)
                changed()
            if r.job is not None and not r.job.done():
                r.job.cancel()  # stop following; the turn itself keeps running in the service
                with contextlib.suppress(asyncio.CancelledError):
                    await r.job
            for t in spinner:
                await t
        return 0
    finally:
        await link.close()
