"""The chat subsystem: opens ``chat.db``, keeps turns in step with the task events, serves ``chat.*``.

It receives narrow ports only (the bus's ``subscribe``, the RPC registry, the task queue's submit and
a task lookup, the served projects); ``wiring.py`` connects it to the supervisor's ``agent_args`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import api
from .conversations import Conversations, GetTask, SubmitTask
from .store import ConversationStore

__all__ = ["ChatSubsystem"]

log = logging.getLogger(__name__)

_FINAL_EVENTS = ("task.completed", "task.failed", "task.timeout", "task.cancelled")


class ChatSubsystem:
    name = "chat"

    def __init__(self, *, state_dir: Path, rpc: Any, subscribe: Callable[..., Any],
                 unsubscribe: Callable[[Any], None], submit: SubmitTask,
                 get_task: GetTask, projects: Callable[[], Iterable[str]],
                 resolve_root: Callable[[str], str]) -> None:
        self.state_dir = state_dir
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._ports = {"submit": submit, "get_task": get_task, "projects": projects, "resolve_root": resolve_root}
        self.conversations: Conversations | None = None
        self._subs: list[Any] = []
        api.register(rpc, self._get)

    def _get(self) -> Conversations:
        if self.conversations is None:
            raise RuntimeError("the chat subsystem is not running")
        return self.conversations

    def open(self) -> Conversations:
        """Open the store (idempotent).  Called by :meth:`start`, or earlier by whoever needs the hook
        before the chat subsystem's turn in the start order (the supervisor starts tasks at once)."""
        if self.conversations is None:
            self.conversations = Conversations(ConversationStore(self.state_dir), **self._ports)
        return self.conversations

    def agent_args(self, task: Any) -> list[str]:
        """The supervisor's hook: session flags for a turn, nothing for any other task."""
        return self.open().agent_args(task.id, task.attempts)

    async def start(self) -> None:
        conv = self.open()
        self._subs.append(self._subscribe("task.session", self._on_session, name="chat.session"))
        for ev in _FINAL_EVENTS:
            self._subs.append(self._subscribe(ev, self._on_final, name=f"chat.{ev}"))
        n = len(conv.list(limit=1000))
        log.info("chat: %d conversation(s)", n)

    def _on_session(self, event: Any) -> None:
        data = event.data or {}
        self._get().session_seen(str(data.get("id")), data.get("session_id"))

    def _on_final(self, event: Any) -> None:
        self._get().task_finished(event.data or {})

    async def stop(self) -> None:
        for sub in self._subs:
            self._unsubscribe(sub)
        self._subs.clear()
        if self.conversations is not None:
            self.conversations.store.close()
            self.conversations = None

    def apply(self, configs: Any) -> None:
        pass

    def health(self) -> dict[str, Any]:
        if self.conversations is None:
            return {"state": "not started"}
        return {"path": str(self.conversations.store.path)}
