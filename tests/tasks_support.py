"""Shared helpers for the test_tasks_* modules (kept out of conftest.py, which other packages share)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from aiwg_service.tasks.agents import profile_lookup
from aiwg_service.tasks.model import AgentProfile
from aiwg_service.tasks.store import Store
from aiwg_service.tasks.supervisor import Supervisor

FAKE_CLAUDE = Path(__file__).resolve().parent / "fake_claude.py"
T = TypeVar("T")


def make_fakebin(tmp: Path) -> Path:
    """A dir with ``claude`` -> fake_claude.py, to put first on PATH."""
    b = tmp / "bin"
    b.mkdir(exist_ok=True)
    link = b / "claude"
    if not link.exists():
        link.symlink_to(FAKE_CLAUDE)
    return b


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, as the service does."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(coro)


class Events:
    """Records emitted events."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str | None, dict[str, Any]]] = []

    def __call__(self, ev: str, project: str | None, data: dict[str, Any]) -> None:
        self.items.append((ev, project, data))

    def types(self, task_id: str | None = None, *, transitions_only: bool = True) -> list[str]:
        """Event types (for one task); by default only the store's state-transition events."""
        return [e for e, _p, d in self.items if (task_id is None or d.get("id") == task_id)
                and not (transitions_only and e == "task.session")]


def make_supervisor(tmp: Path, events: Events | None = None, *,
                    profiles: dict[str, AgentProfile] | None = None,
                    **kw: Any) -> Supervisor:
    ev = events or Events()
    store = Store(tmp / "state", ev)
    kw.setdefault("log_dir", tmp / "logs")
    kw.setdefault("default_timeout_s", 60)
    kw.setdefault("kill_grace_s", 1.0)
    return Supervisor(store, profile_lookup(profiles or {}), ev, **kw)


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except FileNotFoundError:
        return False
    return st[st.rfind(")") + 2] != "Z"


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


async def await_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def read_pid(path: Path, timeout: float = 10.0) -> int:
    """The pid a process wrote to ``path``: the file exists a moment before its number does (``echo $! >``)."""

    def number() -> bool:
        try:
            return int(path.read_text()) > 0
        except (OSError, ValueError):
            return False

    assert wait_for(number, timeout), f"{path} never got a pid"
    return int(path.read_text())


def kill_quiet(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
