"""The chat subsystem: conversations (``chat.*``), interactive agent sessions and the dashboard (``session.*``).

It receives narrow ports only (the bus's subscribe/unsubscribe, the RPC registry, the task queue's submit,
a task lookup, a recorder for sessions, the served projects, the configs view); ``wiring.py`` also hands
its :meth:`agent_args` to the supervisor, which asks it for a turn's session flags as the turn starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import paths
from . import api
from .conversations import Conversations, GetTask, SubmitTask
from .dashboard import Dashboard
from .sessions import Recorder, Sessions
from .store import ConversationStore
from .tmux import Tmux, scope_available

__all__ = ["ChatSubsystem"]

log = logging.getLogger(__name__)

_FINAL_EVENTS = ("task.completed", "task.failed", "task.timeout", "task.cancelled")
#: What tmux (and so every pane it starts) may inherit from the service: no secrets, no systemd fds.
PANE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "SHELL", "TMPDIR", "XDG_RUNTIME_DIR",
            "XDG_STATE_HOME", "XDG_CONFIG_HOME", "DBUS_SESSION_BUS_ADDRESS")


class ChatSubsystem:
    name = "chat"

    def __init__(self, *, state_dir: Path, rpc: Any, subscribe: Callable[..., Any],
                 unsubscribe: Callable[[Any], None], submit: SubmitTask, get_task: GetTask, recorder: Recorder,
                 projects: Callable[[], Iterable[str]], resolve_root: Callable[[str], str],
                 agent_argv: Callable[[str], list[str]], setup: Callable[[str], tuple[list[str] | None, float]],
                 socket_path: Callable[[], Path],
                 confine: Callable[[str, str, list[str]], list[str]] | None = None) -> None:
        self.state_dir = state_dir
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._ports = {"submit": submit, "get_task": get_task, "projects": projects, "resolve_root": resolve_root}
        self._recorder = recorder
        self._projects = projects
        self._resolve_root = resolve_root
        self._agent_argv = agent_argv
        self._setup = setup
        self._socket_path = socket_path
        self._confine = confine
        self.store: ConversationStore | None = None
        self.conversations: Conversations | None = None
        self.sessions: Sessions | None = None
        self.dashboard: Dashboard | None = None
        self._subs: list[Any] = []
        api.register(rpc, self._conversations)
        api.register_sessions(rpc, self._sessions, self._dashboard, self._default_cwd)

    # -- ports for the RPC methods --------------------------------------------------------------
    def _conversations(self) -> Conversations:
        if self.conversations is None:
            raise RuntimeError("the chat subsystem is not running")
        return self.conversations

    def _sessions(self) -> Sessions:
        if self.sessions is None:
            raise RuntimeError("the chat subsystem is not running")
        return self.sessions

    def _dashboard(self) -> Dashboard:
        if self.dashboard is None:
            raise RuntimeError("the chat subsystem is not running")
        return self.dashboard

    def _default_cwd(self, project: str | None) -> str:
        if project is not None:
            return self._resolve_root(project)
        served = list(self._projects())
        return served[0] if len(served) == 1 else os.path.expanduser("~")

    def pane_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PANE_ENV or k.startswith("LC_")}
        env["AIWG_SOCKET"] = str(self._socket_path())
        return env

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> Conversations:
        """Open the store (idempotent).  Called by :meth:`start`, or earlier by the supervisor's hook (the
        supervisor starts before this subsystem and may start a re-queued turn at once)."""
        if self.conversations is None:
            self.store = ConversationStore(self.state_dir)
            self.conversations = Conversations(self.store, **self._ports)
        return self.conversations

    def agent_args(self, task: Any) -> list[str]:
        """The supervisor's hook: session flags for a turn, nothing for any other task."""
        return self.open().agent_args(task.id, task.attempts, getattr(task, "origin", None))

    async def start(self) -> None:
        self.open()
        assert self.store is not None
        tmux = Tmux(paths.tmux_socket_path(), use_scope=scope_available(), env=self.pane_env())
        self.sessions = Sessions(tmux, self.store, self._recorder, state_dir=self.state_dir,
                                 projects=self._projects, resolve_root=self._resolve_root,
                                 agent_argv=self._agent_argv, setup=self._setup, pane_env=self.pane_env,
                                 confine=self._confine)
        self.dashboard = Dashboard(tmux, self.pane_env)
        self._subs.append(self._subscribe("task.session", self._on_session, name="chat.session"))
        for ev in _FINAL_EVENTS:
            self._subs.append(self._subscribe(ev, self._on_final, name=f"chat.{ev}"))
        try:
            await self.sessions.start()
        except Exception as exc:  # tmux missing or broken must not stop the service
            log.warning("chat: cannot check interactive sessions: %s", exc)

    def _on_session(self, event: Any) -> None:
        data = event.data or {}
        self._conversations().session_seen(str(data.get("id")), data.get("session_id"))

    def _on_final(self, event: Any) -> None:
        self._conversations().task_finished(event.data or {})

    async def stop(self) -> None:
        for sub in self._subs:
            self._unsubscribe(sub)
        self._subs.clear()
        if self.sessions is not None:
            await self.sessions.stop()
            self.sessions = None
        if self.store is not None:
            self.store.close()
            self.store = None
            self.conversations = None

    def apply(self, configs: Any) -> None:
        pass

    def health(self) -> dict[str, Any]:
        if self.store is None:
            return {"state": "not started"}
        live = len(self.store.sessions(live_only=True))
        return {"path": str(self.store.path), "sessions": live}
