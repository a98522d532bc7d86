"""The in-process API a messaging hub uses: one conversation per external chat (``key``), on a real SQLite store.

The task queue is reached through its narrow port, so here a small in-memory queue stands behind it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aiwg_service.chat.conversations import ChatError, Conversations
from aiwg_service.chat.store import ConversationStore


class Queue:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}

    def submit(self, project: str, prompt: str, agent: str | None, priority: int, source: str,
               timeout_s: float | None, origin: dict[str, Any]) -> str:
        tid = f"t-{len(self.tasks) + 1}"
        self.tasks[tid] = {"id": tid, "project": project, "prompt": prompt, "agent": agent, "priority": priority,
                           "source": source, "origin": origin, "state": "queued", "attempts": 0}
        return tid

    def finish(self, tid: str, state: str = "completed", **fields: Any) -> None:
        self.tasks[tid].update(state=state, **fields)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Conversations, Queue, Path]:
    project = tmp_path / "p"
    project.mkdir()
    q = Queue()
    conv = Conversations(ConversationStore(tmp_path / "state"), submit=q.submit, get_task=q.tasks.get,
                         projects=lambda: [str(project)], resolve_root=lambda s: str(Path(s).resolve()))
    return conv, q, project


def test_key_keeps_one_conversation_per_chat_and_origin_names_the_turn(setup: Any) -> None:
    convs, q, project = setup
    a = convs.send("hello", key="telegram:42", source="messaging")
    assert q.tasks[a.task_id]["origin"] == {"conversation": a.conversation, "turn": 1}
    assert q.tasks[a.task_id]["source"] == "messaging" and q.tasks[a.task_id]["project"] == str(project)
    sid = convs.get(a.conversation).session_id
    assert convs.agent_args(a.task_id) == ["--session-id", sid]
    q.finish(a.task_id, session_id=sid, cost_usd=0.5, result="hi")
    b = convs.send("again", key="telegram:42", source="messaging")
    assert b.conversation == a.conversation and b.turn == 2
    assert q.tasks[b.task_id]["origin"] == {"conversation": a.conversation, "turn": 2}
    assert convs.agent_args(b.task_id) == ["--resume", sid]
    other = convs.send("hello", key="slack:C1:U2")
    assert other.conversation != a.conversation
    with pytest.raises(ChatError) as busy:
        convs.send("third", key="telegram:42")
    assert busy.value.busy and busy.value.data["taskId"] == b.task_id


def test_a_lost_session_behind_a_key_is_forked_with_a_recap_under_the_same_key(setup: Any) -> None:
    convs, q, _project = setup
    a = convs.send("the secret is 7", key="k")
    sid = convs.get(a.conversation).session_id
    q.finish(a.task_id, session_id=sid, result="noted")
    b = convs.send("secret?", key="k")
    q.finish(b.task_id, "failed", result=f"No conversation found with session ID: {sid}", error="exit code 1")
    c = convs.send("secret now?", key="k")
    assert c.conversation != a.conversation and c.turn == 1
    prompt = q.tasks[c.task_id]["prompt"]
    assert "[turn 1] user: the secret is 7" in prompt and "[turn 1] assistant: noted" in prompt
    assert prompt.endswith("secret now?")
    new = convs.get(c.conversation)
    assert new.key == "k" and new.parent == a.conversation and new.session_id != sid
    assert convs.agent_args(c.task_id) == ["--session-id", new.session_id]
    assert convs.get(a.conversation).key is None
    with pytest.raises(ChatError) as lost:
        convs.send("x", conversation=a.conversation)
    assert lost.value.data["session_lost"] is True


def test_store_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = ConversationStore(tmp_path / "s")
    finally:
        os.umask(old)
    for name in ("chat.db", "chat.db-wal", "chat.db-shm"):
        p = tmp_path / "s" / name
        assert p.exists() and (p.stat().st_mode & 0o777) == 0o600, name
    store.close()


def test_a_conversation_of_a_project_no_longer_served_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    served = [str(project)]
    q = Queue()
    convs = Conversations(ConversationStore(tmp_path / "state"), submit=q.submit, get_task=q.tasks.get,
                          projects=lambda: list(served), resolve_root=lambda s: str(Path(s).resolve()))
    a = convs.send("hi")
    q.finish(a.task_id, session_id=convs.get(a.conversation).session_id)
    served.clear()
    with pytest.raises(ChatError) as gone:
        convs.send("again", conversation=a.conversation)
    assert gone.value.param == "conversation" and "no longer serves" in str(gone.value)
    assert len(q.tasks) == 1  # nothing queued


def test_the_turn_is_written_before_its_task_and_a_lost_link_is_recovered(setup: Any) -> None:
    """Turn first (pending), then the task: a crash between the task's commit and the turn's update leaves a
    turn without its task id; the task finds it by its origin as it starts, and resumes the session."""
    convs, q, _project = setup
    first = convs.send("one", key="k")
    sid = convs.get(first.conversation).session_id
    q.finish(first.task_id, session_id=sid, result="ok")
    store = convs.store
    original = store.set_turn_task
    store.set_turn_task = lambda placeholder, task_id: None  # type: ignore[method-assign]  # "crash" before it
    try:
        second = convs.send("two", key="k")
    finally:
        store.set_turn_task = original  # type: ignore[method-assign]
    pending = store.turns(first.conversation)[-1]
    assert pending.n == 2 and pending.state == "pending" and pending.task_id.startswith("pending-")
    # the task starts: it finds its turn by origin and resumes the conversation's session, not a new one
    assert convs.agent_args(second.task_id, 0, q.tasks[second.task_id]["origin"]) == ["--resume", sid]
    assert store.turn_of_task(second.task_id).n == 2  # type: ignore[union-attr]


def test_a_refused_task_leaves_no_turn(setup: Any) -> None:
    convs, _q, _project = setup

    def refuse(*_a: Any) -> str:
        raise ValueError("unknown agent profile 'x'")

    convs._submit = refuse  # type: ignore[method-assign]
    with pytest.raises(ChatError):
        convs.send("hello", key="k")
    conv = convs.store.by_key("k")
    assert conv is None or convs.store.turns(conv.id) == []
