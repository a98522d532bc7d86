"""The narrow ports the hub is given by ``wiring.py``: it never imports another subsystem.

- ``ask``: one turn of a chat's own conversation (one agent session per chat, resumed), answered when the
  turn completes. Provided by the conversations subsystem. ``answer``: the same wait for a turn a previous
  run of the service queued (its task id is in the inbox).
- ``decide``: approve or reject a pending approval gate, recording who decided and through which bridge.
  Provided by the approvals subsystem.
- the rest read the service (status, health, tasks) or cancel a task.

A port that is None makes its command answer "not available here" instead of failing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol


class AskRefused(Exception):
    """The conversation refused the turn (still answering the last one, no project...): tell the user why."""


class AskPort(Protocol):
    def __call__(self, chat_key: str, text: str, project: str | None = None,
                 on_task: Callable[[str], None] | None = None) -> Awaitable[str]:
        """Run one turn of ``chat_key``'s conversation in ``project`` (None: ``messaging.project``, else the only
        project served); the answer's text. ``on_task(task_id)`` is told the
        turn's task as soon as it is queued. Raises AskRefused with a message for the user, or any other
        exception when the turn failed."""
        ...


class AnswerPort(Protocol):
    def __call__(self, task_id: str) -> Awaitable[str]:
        """The answer of a turn queued earlier (by a previous run of the service: the agent was re-adopted),
        once it completes; raises when the turn failed or is unknown."""
        ...


class DecidePort(Protocol):
    def __call__(self, approval_id: str, approve: bool, by: str, via: str,
                 reason: str | None) -> Awaitable[dict[str, Any]]:
        """Decide a pending approval; raise KeyError if unknown, ValueError if already decided."""
        ...


@dataclass
class ServicePorts:
    #: daemon.status-shaped dict: status line, projects, subsystems
    status: Callable[[], dict[str, Any]]
    #: the newest tasks, newest first, as task dicts (id, state, prompt, project, error)
    tasks: Callable[[int], list[dict[str, Any]]]
    #: cancel one task; returns {taskId, cancelled, state}; raises KeyError if unknown
    cancel: Callable[[str], dict[str, Any]]
    ask: AskPort | None = None
    decide: DecidePort | None = None
    #: the roots served now (what ``/project`` picks from)
    projects: Callable[[], list[str]] | None = None
    #: the policy gate's send check: why ``project``'s events may not go to ``channel`` (``bridge`` or
    #: ``bridge:target``), or None; the refusal is recorded by the gate. None: everything may (tests).
    channel_refused: Callable[[str | None, str, str | None], str | None] | None = None
    answer: AnswerPort | None = None
    #: one task as a dict (state, held_reason…), None if unknown
    task: Callable[[str], dict[str, Any] | None] | None = None
