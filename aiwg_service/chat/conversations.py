"""Conversations: agent turns that share one Claude Code session, resumed turn after turn.

The in-process API (:class:`Conversations`) is what the ``chat.*`` RPC methods and a messaging hub
use.  A turn is an ordinary task (same queue, limits, logs, cost); what makes it a turn is the session
flags the supervisor asks for when it starts the task (:meth:`Conversations.agent_args`):

- the first turn: ``--session-id <uuid4>`` (the id is ours, so it is known before the agent runs);
- later turns, and a re-run of a turn whose agent already announced the session: ``--resume <id>``;
- the first turn of a fork of the live session: ``--resume <parent id> --fork-session`` (the new id is
  read from the stream);
- a fork at an earlier turn, or of a session the agent lost: a new session whose first prompt recaps
  the old turns.

The session id is confirmed from the stream (``task.session`` from ``system/init``, and the finished
task's ``session_id`` from ``result``): if the agent reports another id, that one is kept.  Turns run in
the realpath of the project (claude keys sessions by it).  Decisions are made when a turn *starts*,
from what is stored, so a turn re-queued after a crash still resumes the same session.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ..protocol import utc_now
from .store import FINAL, Conversation, ConversationStore, Turn, new_conversation_id

__all__ = ["ChatError", "Conversations", "SendResult", "SubmitTask"]

log = logging.getLogger(__name__)

#: ``submit(project, prompt, agent, priority, source, timeout_s, origin) -> task id``: the task queue's
#: narrow port (the same one the automation engine gets).  Raises ValueError for an unknown agent.
SubmitTask = Callable[[str, str, str | None, int, str, float | None, dict[str, Any]], str]
#: ``get_task(task_id) -> task dict or None`` (state, session_id, cost_usd, result, error, attempts...).
GetTask = Callable[[str], dict[str, Any] | None]

#: What claude prints when ``--resume`` names a session it does not have (deleted, or another cwd).
LOST_MARK = "No conversation found with session ID"
#: the task id of a turn recorded before its task was queued (see ``_queue_turn``)
PENDING_PREFIX = "pending-"
#: What it prints when ``--session-id`` names one that exists already.
IN_USE_MARK = "is already in use"
TITLE_MAX = 80
RECAP_TURN_CHARS = 1500
RECAP_MAX_CHARS = 12000


class ChatError(Exception):
    """A refusal with a message for the user; ``param`` names the offending parameter, if any."""

    def __init__(self, message: str, *, param: str | None = None, busy: bool = False, **data: Any) -> None:
        super().__init__(message)
        self.param = param
        self.busy = busy
        self.data = data


class SendResult(msgspec.Struct, kw_only=True):
    task_id: str
    conversation: str
    turn: int
    state: str = "queued"

    def to_dict(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "conversation": self.conversation, "turn": self.turn, "state": self.state}


def _title(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= TITLE_MAX else line[: TITLE_MAX - 1] + "…"


class Conversations:
    """Every conversation of the service.  All methods run on the event loop's thread."""

    def __init__(self, store: ConversationStore, *, submit: SubmitTask, get_task: GetTask,
                 projects: Callable[[], Iterable[str]], resolve_root: Callable[[str], str]) -> None:
        self.store = store
        self._submit = submit
        self._get_task = get_task
        self._projects = projects
        self._resolve_root = resolve_root

    # -- the API ---------------------------------------------------------------------------------
    def send(self, message: str, *, conversation: str | None = None, project: str | None = None,
             key: str | None = None, source: str = "chat", priority: int = 5, take: bool = False) -> SendResult:
        """Queue the next turn of ``conversation`` (or of the one kept under ``key``, e.g. one per
        external chat), or of a new conversation.  Refuses an unknown conversation, one of another
        project, one whose turn is still in flight, and one whose session the agent lost (unless it
        is reached by ``key``: then a fork with a recap takes its place under that key).

        A conversation belongs to where it started: one a chat bridge keeps under its key is read-only from
        the socket (by explicit id) unless ``take`` moves it here (the chat then starts a new one)."""
        if not message.strip():
            raise ChatError("message is empty", param="message")
        root = self._project(project) if project is not None or conversation is None else None
        conv: Conversation | None = None
        if conversation is not None:
            conv = self._get(conversation)
        elif key is not None:
            conv = self.store.by_key(key)
        if conv is not None and conversation is not None and key is None and conv.key is not None:
            if not take:
                raise ChatError(f"conversation {conv.id} belongs to the chat {conv.key}: it is read-only here "
                                f"(`aiwgctl chat {conv.id} --take` moves it to this terminal)",
                                param="conversation", owner=conv.key)
            self.store.update(conv.id, key=None)
            conv = self._get(conv.id)
        if conv is not None:
            if root is not None and root != conv.project:
                raise ChatError(f"conversation {conv.id} belongs to project {conv.project}, not {root}",
                                param="project", project=conv.project)
            if conv.project not in list(self._projects()):
                raise ChatError(f"conversation {conv.id} belongs to {conv.project}, which this service no longer "
                                f"serves (add it back with `aiwgctl project add`)", param="conversation")
            self._sync(conv.id)
            conv = self._get(conv.id)
            if conv.session_state == "lost":
                if conversation is None and key is not None:
                    self.store.update(conv.id, key=None)
                    conv = self.fork(conv.id, key=key)
                else:
                    raise ChatError(
                        f"the agent no longer has the session of conversation {conv.id} (it was deleted): "
                        f"fork it to continue with a summary of its {self._turn_count(conv.id)} turn(s) "
                        f"(`chat.fork`, or /fork in `aiwgctl chat`)",
                        param="conversation", session_lost=True, conversation=conv.id)
            last = self.store.last_turn(conv.id)
            if last is not None and not last.finished:
                raise ChatError(f"conversation {conv.id} is still answering turn {last.n} (task {last.task_id}); "
                                f"wait for it or cancel it", busy=True, conversation=conv.id, taskId=last.task_id)
        else:
            assert root is not None
            cwd = os.path.realpath(root)
            now = utc_now()
            conv = self.store.insert(Conversation(
                id=new_conversation_id(), project=root, cwd=cwd, title=_title(message), key=key,
                session_id=str(uuid.uuid4()), created_at=now, last_used_at=now))
        return self._queue_turn(conv, message, source, priority)

    def fork(self, conversation: str, at_turn: int | None = None, *, key: str | None = None) -> Conversation:
        """A new conversation that continues ``conversation`` after turn ``at_turn`` (default: the last).

        After the last turn of a live session it is claude's own fork (``--fork-session``): the new
        session has the full context.  At an earlier turn, or when the session is lost, the new
        session starts with a recap of the turns up to ``at_turn``."""
        src = self._get(conversation)
        self._sync(src.id)
        src = self._get(src.id)
        turns = self.store.turns(src.id)
        done = [t for t in turns if t.finished]
        if not done:
            raise ChatError(f"conversation {src.id} has no finished turn to fork from", param="conversation")
        last = done[-1].n
        at = last if at_turn is None else at_turn
        if at < 1 or at > len(turns):
            raise ChatError(f"conversation {src.id} has turns 1..{len(turns)}", param="at_turn")
        if at > last:
            raise ChatError(f"turn {at} of {src.id} has not finished yet", param="at_turn")
        native = at == last and src.session_state == "active" and src.session_id is not None
        now = utc_now()
        title = src.title if src.title.startswith("fork of ") else f"fork of {src.title}"
        conv = Conversation(
            id=new_conversation_id(), project=src.project, cwd=src.cwd, title=_title(title), agent=src.agent,
            session_id=src.session_id if native else str(uuid.uuid4()),
            session_state="pending-fork" if native else "new", key=key, parent=src.id, fork_turn=at,
            fork_mode="session" if native else "summary", created_at=now, last_used_at=now)
        return self.store.insert(conv)

    def delete(self, conversation: str) -> dict[str, Any]:
        conv = self._get(conversation)
        self._sync(conv.id)
        last = self.store.last_turn(conv.id)
        if last is not None and not last.finished:
            raise ChatError(f"conversation {conv.id} is still answering turn {last.n} (task {last.task_id}); "
                            f"cancel it first", busy=True, conversation=conv.id, taskId=last.task_id)
        self.store.delete(conv.id)
        return {"conversation": conv.id, "deleted": True}

    def list(self, project: str | None = None, limit: int = 50, *, terminal: bool = False) -> list[dict[str, Any]]:
        """Newest first; ``terminal``: only those started at a terminal (no bridge key)."""
        root = self._project(project) if project is not None else None
        for t in self.store.unfinished_turns():
            self._sync_turn(t)
        return self.store.list(root, limit, terminal=terminal)

    def history(self, conversation: str) -> dict[str, Any]:
        conv = self._get(conversation)
        self._sync(conv.id)
        conv = self._get(conv.id)
        turns = self.store.turns(conv.id)
        out = msgspec.to_builtins(conv)
        out["turns"] = [{**msgspec.to_builtins(t), "taskId": t.task_id} for t in turns]
        out["cost_usd"] = round(sum(t.cost_usd or 0.0 for t in turns), 6)
        return out

    def get(self, conversation: str) -> Conversation:
        return self._get(conversation)

    # -- the supervisor's hook ----------------------------------------------------------------------
    def agent_args(self, task_id: str, attempts: int = 0, origin: dict[str, Any] | None = None) -> list[str]:
        """Session flags for the task about to start: nothing unless it is a turn.  ``attempts`` is how
        many times the task started before; ``origin`` finds a turn that never learnt its task id."""
        turn = self.store.turn_of_task(task_id) or self._adopt(task_id, origin)
        if turn is None:
            return []
        conv = self.store.get(turn.conversation)
        if conv is None or conv.session_id is None:
            return []
        self._sync(conv.id, before=turn.n)
        conv = self.store.get(conv.id) or conv
        sid = conv.session_id
        assert sid is not None
        if conv.session_state == "pending-fork":
            return ["--resume", sid, "--fork-session"]
        if conv.session_state in ("active", "lost"):
            return ["--resume", sid]
        return ["--session-id", sid]

    def session_seen(self, task_id: str, session_id: str | None) -> None:
        """``task.session``: the agent announced its session (``system/init``), so it exists now."""
        if not session_id:
            return
        turn = self.store.turn_of_task(task_id)
        if turn is None:
            return
        conv = self.store.get(turn.conversation)
        if conv is None:
            return
        self.store.update_turn(task_id, session_id=session_id)
        if conv.session_state in ("new", "pending-fork") or conv.session_id != session_id:
            self.store.update(conv.id, session_id=session_id, session_state="active")

    def task_finished(self, task: dict[str, Any]) -> None:
        """A ``task.*`` final event: copy the outcome to the turn (if it is one)."""
        turn = self.store.turn_of_task(str(task.get("id")))
        if turn is not None and not turn.finished:
            self._apply(turn, task)

    # -- internals ----------------------------------------------------------------------------------
    def _get(self, conversation: str) -> Conversation:
        conv = self.store.get(conversation)
        if conv is None:
            raise ChatError(f"no conversation {conversation!r} (see `aiwgctl chat list`)", param="conversation")
        return conv

    def _project(self, value: str | None) -> str:
        served = list(self._projects())
        if value is None:
            if len(served) == 1:
                return served[0]
            if not served:
                raise ChatError("the service serves no project; add one with `aiwgctl project add`", param="project")
            raise ChatError(f"required: the service serves {len(served)} projects ({', '.join(served)})",
                            param="project", projects=served)
        root = self._resolve_root(value)
        if root not in served:
            raise ChatError(f"{root} is not a project this service serves", param="project", projects=served)
        return root

    def _turn_count(self, conv_id: str) -> int:
        return self.store.turn_count(conv_id)

    def _queue_turn(self, conv: Conversation, message: str, source: str, priority: int) -> SendResult:
        n = self._turn_count(conv.id) + 1
        prompt = message
        if conv.fork_mode == "summary" and n == 1 and conv.parent is not None:
            prompt = self._recap(conv.parent, conv.fork_turn) + message
        origin = {"conversation": conv.id, "turn": n}
        if conv.cwd != os.path.realpath(conv.project):
            raise ChatError(f"project {conv.project} now resolves to {os.path.realpath(conv.project)}, not "
                            f"{conv.cwd} where the session lives; the agent could not resume it there",
                            param="conversation")
        # The turn first, marked pending, then the task (another database), then the turn gets its task id.
        # A crash between the two leaves a recoverable pair: the task finds its turn by ``origin``
        # (``agent_args``), and a turn whose task never came is found lost by ``_sync``.
        placeholder = f"{PENDING_PREFIX}{uuid.uuid4()}"
        self.store.add_turn(Turn(conversation=conv.id, n=n, task_id=placeholder, message=message, source=source,
                                 state="pending", created_at=utc_now()), utc_now())
        try:
            task_id = self._submit(conv.project, prompt, conv.agent, priority, source, None, origin)
        except BaseException as exc:
            self.store.delete_turn(placeholder)
            if isinstance(exc, ValueError):
                raise ChatError(str(exc), param="agent") from None
            raise
        self.store.set_turn_task(placeholder, task_id)
        return SendResult(task_id=task_id, conversation=conv.id, turn=n)

    def _adopt(self, task_id: str, origin: dict[str, Any] | None) -> Turn | None:
        """The turn a task was queued for, when the service stopped before the turn learnt its task id."""
        if not origin or "conversation" not in origin or "turn" not in origin:
            return None
        for t in self.store.turns(str(origin["conversation"])):
            if t.n == origin["turn"] and t.task_id.startswith(PENDING_PREFIX):
                log.info("conversation %s: turn %d adopts its task %s", t.conversation, t.n, task_id)
                self.store.set_turn_task(t.task_id, task_id)
                return self.store.turn_of_task(task_id)
        return None

    def _recap(self, parent: str, upto: int | None) -> str:
        """The first prompt of a summary fork: the old turns, newest kept when they do not all fit."""
        parts: list[str] = []
        for t in self.store.turns(parent, upto):
            answer = (t.result or t.error or f"({t.state})").strip()
            parts.append(f"[turn {t.n}] user: {t.message.strip()[:RECAP_TURN_CHARS]}\n"
                         f"[turn {t.n}] assistant: {answer[:RECAP_TURN_CHARS]}")
        body = ""
        for part in reversed(parts):
            if len(body) + len(part) > RECAP_MAX_CHARS:
                body = "[earlier turns omitted]\n\n" + body
                break
            body = part + "\n\n" + body
        return ("This continues an earlier conversation whose agent session is no longer available. "
                "Here is a summary of its turns, oldest first:\n\n" + body + "Now the new message:\n\n")

    def _sync(self, conv_id: str, before: int | None = None) -> None:
        """Bring unfinished turns up to date from the task store (events may have been missed, e.g.
        across a crash)."""
        for t in self.store.unfinished_turns(conv_id):
            if before is not None and t.n >= before:
                break
            self._sync_turn(t)

    def _sync_turn(self, turn: Turn) -> None:
        task = self._get_task(turn.task_id)
        if task is None:
            self.store.update_turn(turn.task_id, state="lost", error="the task is no longer in the task store")
            return
        self._apply(turn, task)

    def _apply(self, turn: Turn, task: dict[str, Any]) -> None:
        state = str(task.get("state"))
        sid = task.get("session_id")
        if state not in FINAL:
            if state != turn.state:
                self.store.update_turn(turn.task_id, state=state)
            return
        result, error = task.get("result"), task.get("error")
        self.store.update_turn(turn.task_id, state=state, session_id=sid or turn.session_id,
                               cost_usd=task.get("cost_usd"), result=result, error=error,
                               finished_at=task.get("finished_at"))
        conv = self.store.get(turn.conversation)
        if conv is None:
            return
        said = f"{result or ''}\n{error or ''}"
        if state == "failed" and LOST_MARK in said:
            log.warning("conversation %s: the agent has no session %s any more", conv.id, conv.session_id)
            self.store.update(conv.id, session_state="lost")
        elif state == "failed" and IN_USE_MARK in said:
            self.store.update(conv.id, session_state="active")  # it exists: resume it next time
        elif sid and (conv.session_state != "active" or sid != conv.session_id):
            if conv.session_state == "active" and sid != conv.session_id:
                log.info("conversation %s: the agent continued in session %s (was %s)", conv.id, sid, conv.session_id)
            self.store.update(conv.id, session_id=sid, session_state="active")
