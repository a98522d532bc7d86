"""Inbound commands: authenticate, rate-limit, parse, run, answer.

Order matters: the user id is checked against the allow-list before anything else runs (a display name
is never looked at), then the rate limit, then the command. Every refusal is logged with the platform
user id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .binding import ChatProjects, pick
from .model import Inbound, OutMessage
from .ports import AskRefused, ServicePorts
from .schema import MessagingSection

log = logging.getLogger("aiwg.messaging")


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    permission: str  # read | write
    usage: str


COMMANDS: dict[str, tuple[str, str, str]] = {  # name: (permission, usage, what it does)
    "help": ("read", "/help", "this list"),
    "status": ("read", "/status", "the service's status line, projects and tasks"),
    "health": ("read", "/health", "each subsystem's and bridge's health"),
    "tasks": ("read", "/tasks", "the newest tasks"),
    "ask": ("write", "/ask QUESTION", "ask the agent; this chat keeps its own conversation"),
    "project": ("write", "/project [NAME]", "show or pick the project this chat's /ask works in"),
    "cancel": ("write", "/cancel ID", "cancel a task"),
    "approve": ("write", "/approve ID", "approve a pending approval"),
    "reject": ("write", "/reject ID [reason]", "reject a pending approval"),
}
KNOWN = ", ".join(f"/{c}" for c in COMMANDS)
#: how much of an answer fits one message on each platform (its limit, less room for escaping and the tail)
ANSWER_ROOM = {"telegram": 3600, "discord": 1800, "slack": 2700}
REFUSAL = "Sorry, you are not allowed to use this service. Ask its owner to add your user id ({user}) to its config."


def parse(text: str) -> tuple[str, str]:
    """``/status@MyBot args`` / ``status args`` -> ("status", "args"). Lower-cased command, args as typed."""
    text = text.strip()
    if text.startswith("/"):
        text = text[1:]
    word, _, rest = text.partition(" ")
    if "\n" in word:
        word, _, more = word.partition("\n")
        rest = more + (" " + rest if rest else "")
    word = word.split("@", 1)[0].lower()
    return word, rest.strip()


def fit_answer(answer: str, platform: str, task_id: str | None) -> str:
    """An answer too long for one message is cut, and says which task holds all of it and how to read it."""
    room = ANSWER_ROOM.get(platform, 3600)
    if len(answer) <= room:
        return answer
    where = f"aiwgctl task logs {task_id}" if task_id else "aiwgctl task list --source messaging"
    tail = f"\n… (cut; the whole answer: {where})"
    return answer[: room - len(tail)] + tail


def as_command(text: str, *, private: bool, plain_ask: bool) -> str | None:
    """What a message means, the same on every platform: ``/cmd …`` is that command; a message that starts
    with a command's name (``@bot status``) is that command; any other text in a private chat (or
    addressed to the bot) is a question, ``/ask`` (unless ``plain_ask`` is off: then None, ignored)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("/"):
        return text
    if text.split(maxsplit=1)[0].lower() in COMMANDS:
        return "/" + text
    if plain_ask and private:
        return "/ask " + text
    return None


class RateLimiter:
    """At most ``n`` commands per ``window`` seconds per user: a sliding window of timestamps."""

    def __init__(self, n: int, window: float) -> None:
        self.n, self.window = n, window
        self.seen: dict[str, deque[float]] = {}

    def allow(self, user: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        q = self.seen.setdefault(user, deque())
        while q and now - q[0] >= self.window:
            q.popleft()
        if len(q) >= self.n:
            return False
        q.append(now)
        return True


Reply = Callable[[OutMessage], Awaitable[None]]


class CommandRunner:
    def __init__(self, ports: ServicePorts, section: Callable[[], MessagingSection],
                 bridges: Callable[[], dict[str, dict[str, Any]]], bindings: ChatProjects | None = None) -> None:
        self.ports = ports
        self.bindings = bindings
        self.section = section
        self.bridges = bridges
        cfg = section()
        self.limiter = RateLimiter(cfg.rate_limit.commands, cfg.rate_limit.per_seconds)
        self.refused = 0
        self.limited = 0
        self.ran = 0
        self._told: dict[str, float] = {}  # when each user was last told of a refusal (one per window)

    def _once(self, user: str, text: str) -> OutMessage:
        """A refusal, said once per rate-limit window to each user: a burst of 46 commands gets one answer
        in the chat (the empty text says "say nothing more"; a button press still gets its private answer)."""
        now = time.monotonic()
        window = self.section().rate_limit.per_seconds
        if now - self._told.get(user, -1e18) < window:
            return OutMessage("", reply=True, private=True)
        self._told[user] = now
        if len(self._told) > 10_000:  # strangers must not grow it without bound
            self._told = {u: t for u, t in self._told.items() if now - t < window}
        return OutMessage(text, reply=True, private=True)

    def reconfigure(self) -> None:
        cfg = self.section()
        self.limiter.n, self.limiter.window = cfg.rate_limit.commands, cfg.rate_limit.per_seconds

    def permission(self, inbound: Inbound) -> str | None:
        return self.section().users.get(inbound.user_key)

    def admit(self, inbound: Inbound) -> OutMessage | None:
        """None if the command may run; else the refusal to send (or an empty one: say nothing)."""
        perm = self.permission(inbound)
        if perm is None:
            self.refused += 1
            log.warning("messaging: refused a command from unlisted user %s (%r): %s", inbound.user_key,
                        inbound.display, inbound.text[:80])
            return self._once("unlisted:" + inbound.user_key, REFUSAL.format(user=inbound.user_key))
        if not self.limiter.allow(inbound.user_key):
            self.limited += 1
            log.warning("messaging: rate limit exceeded for %s", inbound.user_key)
            cfg = self.section().rate_limit
            return self._once("limited:" + inbound.user_key,
                              f"Rate limit exceeded: at most {cfg.commands} commands per {cfg.per_seconds} s; "
                              f"further commands in this window are ignored.")
        name, _ = parse(inbound.text)
        need = COMMANDS.get(name, ("read",))[0]
        if need == "write" and perm != "write":
            self.refused += 1
            log.warning("messaging: %s has read permission only; refused /%s", inbound.user_key, name)
            return OutMessage(f"/{name} needs write permission; you have read.", reply=True, private=True)
        return None

    async def run(self, inbound: Inbound, reply: Reply) -> None:
        """Run an admitted command; everything it says goes through ``reply``."""
        name, args = parse(inbound.text)
        self.ran += 1
        try:
            if name not in COMMANDS:
                await reply(OutMessage(f"Unknown command /{name}. Known commands: {KNOWN}", reply=True))
                return
            handler = getattr(self, f"cmd_{name}")
            await handler(inbound, args, reply)
        except Exception as exc:
            log.exception("messaging: /%s from %s failed", name, inbound.user_key)
            await reply(OutMessage(f"/{name} failed: {type(exc).__name__}: {exc}", reply=True))

    # -- the commands ------------------------------------------------------------------------------
    async def cmd_help(self, inbound: Inbound, args: str, reply: Reply) -> None:
        perm = self.permission(inbound)
        lines = [f"{usage} — {what}" + (" (needs write)" if need == "write" and perm != "write" else "")
                 for need, usage, what in COMMANDS.values()]
        await reply(OutMessage("\n".join(lines), title="aiwg commands", reply=True))

    async def cmd_status(self, inbound: Inbound, args: str, reply: Reply) -> None:
        st = self.ports.status()
        sup = st.get("subsystems", {}).get("supervisor", {})
        lines = [st.get("status", ""),
                 f"uptime {int(st.get('uptime_seconds', 0))} s · version {st.get('version', '?')}",
                 f"tasks: {sup.get('running', 0)} running, {sup.get('queued', 0)} queued"]
        for pr in st.get("projects", []):
            lines.append(f"project {pr.get('path')}")
        await reply(OutMessage("\n".join(x for x in lines if x), title="aiwg status", reply=True))

    async def cmd_health(self, inbound: Inbound, args: str, reply: Reply) -> None:
        st = self.ports.status()
        lines = []
        for name, h in st.get("subsystems", {}).items():
            if name == "messaging":
                continue
            word = h.get("state") or ("error: " + h["error"] if "error" in h else "ok")
            lines.append(f"{name}: {word}")
        for name, b in self.bridges().items():
            lines.append(f"bridge {name}: {b['state']}" + (f" ({b['last_error']})" if b.get("last_error") else ""))
        cfg = st.get("config", {})
        if not cfg.get("ok", True):
            lines.append("config: last reload refused")
        await reply(OutMessage("\n".join(lines), title="aiwg health", reply=True))

    async def cmd_tasks(self, inbound: Inbound, args: str, reply: Reply) -> None:
        tasks = self.ports.tasks(10)
        if not tasks:
            await reply(OutMessage("No tasks.", reply=True))
            return
        lines = [f"{t['id']} {t['state']}: {t.get('prompt', '')[:60]}" for t in tasks]
        await reply(OutMessage("\n".join(lines), title="newest tasks", reply=True))

    async def cmd_cancel(self, inbound: Inbound, args: str, reply: Reply) -> None:
        if not args:
            await reply(OutMessage("Usage: /cancel ID", reply=True))
            return
        try:
            res = self.ports.cancel(args.split()[0])
        except KeyError:
            await reply(OutMessage(f"No task {args.split()[0]}.", reply=True))
            return
        word = "cancelled" if res.get("cancelled") else f"not cancelled (it is {res.get('state')})"
        await reply(OutMessage(f"Task {res.get('taskId')} {word}.", reply=True))

    async def cmd_ask(self, inbound: Inbound, args: str, reply: Reply) -> None:
        if not args:
            await reply(OutMessage("Usage: /ask QUESTION", reply=True))
            return
        if self.ports.ask is None:
            await reply(OutMessage("/ask is not available: this service has no conversations.", reply=True))
            return
        project, _why = self.project_of(inbound.chat_key)
        served = self.served()
        if project is None and len(served) != 1:
            names = ", ".join(os.path.basename(r) for r in served) or "none"
            await reply(OutMessage(f"This chat has no project: pick one with /project NAME (served: {names}), or "
                                   "have the owner set messaging.project in the service's config.", reply=True))
            return
        task_ids: list[str] = []

        def on_task(task_id: str) -> None:
            task_ids.append(task_id)
            if inbound.on_task is not None:
                inbound.on_task(task_id)

        turn = asyncio.ensure_future(self.ports.ask(inbound.chat_key, args, project, on_task))
        await self._answer(inbound, turn, task_ids, reply)

    async def resume_ask(self, inbound: Inbound, task_id: str, reply: Reply) -> None:
        """An /ask whose turn a previous run of the service queued: its answer, once the turn is done."""
        if self.ports.answer is None:
            return
        await self._answer(inbound, asyncio.ensure_future(self.ports.answer(task_id)), [task_id], reply,
                           notice=False)

    async def _answer(self, inbound: Inbound, turn: asyncio.Future[str], task_ids: list[str], reply: Reply,
                      notice: bool = True) -> None:
        cfg = self.section()
        try:  # awaited below, and cancelled with this command (the agent's turn itself is a task in the queue)
            done, _ = await asyncio.wait({turn}, timeout=cfg.working_notice_seconds)
        except BaseException:
            turn.cancel()
            raise
        if not done and notice:
            task = self.ports.task(task_ids[-1]) if self.ports.task is not None and task_ids else None
            if task is not None and task.get("state") == "held":  # a budget holds it: say so, not "working…"
                await reply(OutMessage(f"held: {task.get('held_reason') or 'waiting for a budget'} (task "
                                       f"{task_ids[-1]}; /cancel {task_ids[-1]} cancels it)", reply=True))
            else:
                await reply(OutMessage("working…", reply=True))
        try:
            answer = await asyncio.wait_for(turn, cfg.ask_timeout_seconds)
        except TimeoutError:
            where = f" (task {task_ids[-1]}: `aiwgctl task logs {task_ids[-1]}`)" if task_ids else ""
            await reply(OutMessage(f"No answer after {cfg.ask_timeout_seconds:g} s; the turn goes on in the "
                                   f"background{where}.", reply=True))
            return
        except AskRefused as exc:
            await reply(OutMessage(str(exc), reply=True))
            return
        except Exception as exc:
            await reply(OutMessage(f"The agent failed: {exc}", severity="warning", reply=True))
            return
        await reply(OutMessage(fit_answer(answer, inbound.platform, task_ids[-1] if task_ids else None)
                               or "(empty answer)", reply=True))

    def served(self) -> list[str]:
        return self.ports.projects() if self.ports.projects is not None else []

    def project_of(self, chat_key: str) -> tuple[str | None, str]:
        """The project this chat's /ask works in, and why: its /project, else messaging.project, else None."""
        served = self.served()
        bound = self.bindings.get(chat_key) if self.bindings is not None else None
        if bound is not None and bound in served:
            return bound, "picked with /project"
        if self.section().project:
            return self.section().project, "messaging.project"
        return None, ""

    async def cmd_project(self, inbound: Inbound, args: str, reply: Reply) -> None:
        served = self.served()
        names = ", ".join(os.path.basename(r) for r in served) or "none"
        if not args:
            project, why = self.project_of(inbound.chat_key)
            if project is None and len(served) == 1:
                project, why = served[0], "the only project served"
            now = f"This chat works in {project} ({why})." if project else "This chat has no project yet."
            await reply(OutMessage(f"{now} Served: {names}. Pick one with /project NAME.", reply=True))
            return
        root = pick(args.split()[0], served)
        if root is None:
            await reply(OutMessage(f"No served project is called {args.split()[0]!r}. Served: {names}.", reply=True))
            return
        if self.bindings is None:
            await reply(OutMessage("/project is not available here.", reply=True))
            return
        self.bindings.set(inbound.chat_key, root)
        log.info("messaging: chat %s now works in %s (set by %s)", inbound.chat_key, root, inbound.user_key)
        await reply(OutMessage(f"This chat's /ask now works in {root}.", reply=True))

    async def _decide(self, inbound: Inbound, args: str, reply: Reply, approve: bool) -> None:
        word = "approve" if approve else "reject"
        approval_id, _, reason = args.partition(" ")
        if not approval_id:
            await reply(OutMessage(f"Usage: /{word} ID" + ("" if approve else " [reason]"), reply=True))
            return
        if self.ports.decide is None:
            await reply(OutMessage(f"/{word} is not available: this service has no approval gates.", reply=True))
            return
        try:
            res = await self.ports.decide(approval_id, approve, inbound.user_key, inbound.platform,
                                          reason.strip() or None)
        except KeyError:
            await reply(OutMessage(f"No pending approval {approval_id}.", reply=True))
            return
        except PermissionError as exc:  # not one of its approvers: told privately, the buttons stay
            await reply(OutMessage(f"Approval {approval_id}: {exc}", reply=True, private=True))
            return
        except ValueError as exc:
            await reply(OutMessage(f"Approval {approval_id}: {exc}", reply=True))
            return
        state = res.get("state") or ("approved" if approve else "rejected")
        await reply(OutMessage(f"Approval {approval_id} {state} by {inbound.user_key}.", reply=True))

    async def cmd_approve(self, inbound: Inbound, args: str, reply: Reply) -> None:
        await self._decide(inbound, args, reply, True)

    async def cmd_reject(self, inbound: Inbound, args: str, reply: Reply) -> None:
        await self._decide(inbound, args, reply, False)
