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
from collections.abc import Callable
from typing import Any

from .. import paths
from .. import protocol as p
from .chat_render import Spinner, Style, TurnPrinter, excerpt, follow_turn, is_tty
from .chat_rpc import AsyncRpc

__all__ = ["COMMANDS", "one_shot", "repl"]

COMMANDS: dict[str, str] = {
    "/help": "this list",
    "/status": "the service's state",
    "/history": "the turns of this conversation",
    "/tasks": "recent tasks of the service",
    "/run": "/run PROMPT: queue a one-off agent task (not part of the conversation)",
    "/cancel": "/cancel [ID]: cancel the turn in flight, or task ID",
    "/new": "start a new conversation with the next message",
    "/list": "the conversations of this project",
    "/switch": "/switch ID: continue another conversation",
    "/fork": "/fork [TURN]: continue in a branch of this conversation",
    "/cost": "what this conversation cost so far",
    "/quit": "leave (Ctrl-D too); a turn in flight keeps running",
}
EXIT = {"completed": 0}


def _socket() -> str:
    from .core import resolve_socket

    return resolve_socket()


# -- non-interactive ---------------------------------------------------------------------------------


async def one_shot(message: str, conversation: str | None, project: str | None, take: bool = False) -> int:
    """Send one message, print the answer as it streams, exit 0 if the turn completed, else 1."""
    rpc = await AsyncRpc.connect(_socket())
    try:
        res = await rpc.call("chat.send", {"message": message, "conversation": conversation, "project": project,
                                           **({"take": True} if take else {})})
        printer = TurnPrinter(lambda s: (sys.stdout.write(s), sys.stdout.flush()), Style(is_tty(sys.stdout)))
        state = await follow_turn(rpc, res["taskId"], printer, Spinner(sys.stderr, is_tty(sys.stderr)))
        sys.stderr.write(f"conversation {res['conversation']} turn {res['turn']}: {state}\n")
        if state != "completed":
            t = await rpc.call("task.get", {"taskId": res["taskId"]})
            if t.get("error"):
                sys.stderr.write(f"aiwgctl: {t['error']}\n")
        return EXIT.get(state, 1)
    finally:
        await rpc.close()


# -- the REPL ----------------------------------------------------------------------------------------


class Repl:
    def __init__(self, rpc: AsyncRpc, conversation: str | None, project: str | None, write: Callable[[str], None],
                 color: bool) -> None:
        self.rpc = rpc
        self.conversation = conversation
        self.project = project
        self.write = write
        self.s = Style(color)
        self.current: str | None = None  # the task of the turn in flight
        self.job: asyncio.Task[None] | None = None  # the turn in flight, as the REPL awaits it
        self.lost: Exception | None = None
        self.done = False
        self.take = False  # --take: continue a chat bridge's conversation here

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
                await self.turn(line)
        except p.RpcError as exc:
            self.say(self.s.red(exc.message))
        except ConnectionError as exc:
            self.lost = exc
            self.done = True
            self.say(self.s.red(f"lost the service: {exc}"))

    async def turn(self, message: str) -> None:
        res = await self.rpc.call("chat.send", {"message": message, "conversation": self.conversation,
                                               "project": self.project, **({"take": True} if self.take else {})})
        if res["conversation"] != self.conversation:
            self.say(self.s.dim(f"(conversation {res['conversation']})"))
        self.conversation = res["conversation"]
        self.current = res["taskId"]
        try:
            printer = TurnPrinter(self.write, self.s)
            state = await follow_turn(self.rpc, res["taskId"], printer, Spinner(sys.stdout, False))
        finally:
            self.current = None
        if state != "completed":
            t = await self.rpc.call("task.get", {"taskId": res["taskId"]})
            self.say(self.s.red(f"turn {res['turn']} {state}" + (f": {t['error']}" if t.get("error") else "")))

    async def cancel_current(self) -> None:
        if self.current is not None:
            with contextlib.suppress(p.RpcError, ConnectionError):
                await self.rpc.call("task.cancel", {"taskId": self.current})
            self.say(self.s.dim("(cancelling the turn…)"))

    async def command(self, line: str) -> None:
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        if cmd == "/help":
            width = max(map(len, COMMANDS))
            for name, text in COMMANDS.items():
                self.say(f"{name:<{width}}  {text}")
        elif cmd in ("/quit", "/exit"):
            self.done = True
        elif cmd == "/status":
            st = await self.rpc.call("daemon.status")
            self.say(f"{st.get('status', '')} (pid {st['pid']}, {len(st['projects'])} project(s))")
        elif cmd == "/history":
            if self.conversation is None:
                self.say("no conversation yet: say something")
                return
            h = await self.rpc.call("chat.history", {"conversation": self.conversation})
            self.say(self.s.bold(f"{h['id']}: {h['title']}") + self.s.dim(f"  session {h['session_id']} "
                                                                          f"({h['session_state']})"))
            for t in h["turns"]:
                self.say(f"[{t['n']}] you: {t['message']}")
                answer = t.get("result") or t.get("error") or f"({t['state']})"
                self.say(f"[{t['n']}] {t['state']}: {answer}")
        elif cmd == "/tasks":
            res = await self.rpc.call("task.list", {"limit": 10})
            tasks = res if isinstance(res, list) else res.get("tasks", [])
            for t in tasks:
                self.say(f"{t['id']}  {t['state']:<9}  {t['source']:<8}  {excerpt(t['prompt'], 50)}")
            if not tasks:
                self.say("no tasks")
        elif cmd == "/run":
            if not arg:
                self.say("usage: /run PROMPT")
                return
            res = await self.rpc.call("task.submit", {"prompt": arg, "project": self.project})
            self.say(f"queued task {res['taskId']}")
        elif cmd == "/cancel":
            target = arg or self.current
            if target is None:
                self.say("nothing to cancel")
                return
            res = await self.rpc.call("task.cancel", {"taskId": target})
            self.say(f"{target}: {'cancelled' if res.get('cancelled') else 'not cancelled'} ({res.get('state')})")
        elif cmd == "/new":
            self.conversation = None
            self.say("the next message starts a new conversation")
        elif cmd == "/list":
            res = await self.rpc.call("chat.list", {"project": self.project, "limit": 20})
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
            h = await self.rpc.call("chat.history", {"conversation": arg})
            self.conversation = h["id"]
            self.say(f"now in {h['id']}: {h['title']} ({len(h['turns'])} turns)")
        elif cmd == "/fork":
            if self.conversation is None:
                self.say("no conversation to fork")
                return
            at = int(arg) if arg.isdigit() else None
            res = await self.rpc.call("chat.fork", {"conversation": self.conversation, "at_turn": at})
            self.conversation = res["conversation"]
            self.say(f"forked at turn {res['at_turn']} into {res['conversation']} ({res['mode']})")
        elif cmd == "/cost":
            if self.conversation is None:
                self.say("$0.0000")
                return
            h = await self.rpc.call("chat.history", {"conversation": self.conversation})
            self.say(f"${h['cost_usd']:.4f} over {len(h['turns'])} turn(s)")
        else:
            self.say(f"unknown command {cmd}; /help lists them")


def completer() -> Any:
    """Tab completes the slash commands (at the start of the line only)."""
    from prompt_toolkit.completion import WordCompleter

    return WordCompleter(list(COMMANDS), sentence=True)


async def _pick_conversation(rpc: AsyncRpc, conversation: str | None, project: str | None, new: bool) -> str | None:
    if new:
        return None
    if conversation is not None:
        h = await rpc.call("chat.history", {"conversation": conversation})
        return str(h["id"])
    # only a conversation started at a terminal: a chat bridge's is reached by its id, never by default
    res = await rpc.call("chat.list", {"project": project, "limit": 1, "terminal": True})
    convs = res.get("conversations", [])
    return str(convs[0]["id"]) if convs else None


async def repl(conversation: str | None, project: str | None, new: bool, *, input: Any = None,
               output: Any = None, take: bool = False) -> int:
    """The interactive loop.  ``input``/``output`` are prompt_toolkit's (tests pass a pipe input)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    rpc = await AsyncRpc.connect(_socket())
    try:
        conv = await _pick_conversation(rpc, conversation, project, new)
        hist_dir = paths.state_dir()
        hist_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        hist_file = hist_dir / "chat_history"
        fd = os.open(hist_file, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        os.close(fd)
        session: PromptSession[str] = PromptSession(
            history=FileHistory(str(hist_file)), completer=completer(),
            input=input, output=output)

        def write(s: str) -> None:
            sys.stdout.write(s)  # patch_stdout's proxy: lines appear above the prompt, never through it
            sys.stdout.flush()

        r = Repl(rpc, conv, project, write, is_tty(sys.stdout) and output is None)
        r.take = take
        where = f"conversation {conv}" if conv else "a new conversation"
        r.say(r.s.dim(f"aiwg chat: {where}. /help for commands, Ctrl-D to quit."))
        loop = asyncio.get_running_loop()
        frame = [0]
        spinner: asyncio.Task[None] | None = None

        def message() -> str:
            if r.busy:
                return f"{Spinner.FRAMES[frame[0] % len(Spinner.FRAMES)]} thinking… "
            return "you> "

        async def spin() -> None:
            # Only while a turn runs: the prompt line shows a spinner; idle, nothing wakes up.
            while r.busy:
                frame[0] += 1
                session.app.invalidate()
                await asyncio.sleep(0.1)
            session.app.invalidate()

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
                if r.busy and not line.strip().startswith("/"):
                    r.say(r.s.dim("a turn is still answering: wait for it, or Ctrl-C to cancel it"))
                    continue
                job = loop.create_task(r.handle(line))
                if line.strip().startswith("/"):
                    await job
                    continue
                r.job = job

                def turn_done(_job: asyncio.Task[None]) -> None:
                    if not session.app.is_running:
                        return
                    if r.done:  # the service went away: leave the prompt
                        session.app.exit(exception=EOFError())
                    else:
                        session.app.invalidate()

                job.add_done_callback(turn_done)
                spinner = loop.create_task(spin())
            if r.job is not None and not r.job.done():
                r.job.cancel()  # stop following; the turn itself keeps running in the service
                with contextlib.suppress(asyncio.CancelledError):
                    await r.job
                if spinner is not None:
                    await spinner
        if r.lost is not None:
            r.say(r.s.red(f"lost the service: {r.lost}"))
            return 1
        return 0
    finally:
        await rpc.close()
