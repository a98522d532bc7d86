"""A command that crashes is never left ``started`` in the inbox for good: its row is marked failed, the user
is told, and the crash is logged with the command; no "never retrieved" task is left behind."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from aiwg_service.messaging.hub import MessagingSubsystem
from aiwg_service.messaging.model import BridgeState, Inbound, OutMessage
from aiwg_service.messaging.ports import ServicePorts
from aiwg_service.messaging.schema import MessagingSection
from aiwg_service.messaging.store import MessagingStore


class Bus:
    def subscribe(self, *_a: Any, **_k: Any) -> None:
        return None


class Chat:
    """A bridge's outward side: what the hub sends lands here."""

    name = "telegram"

    def __init__(self) -> None:
        self.state = BridgeState("telegram", enabled=True, state="connected")
        self.sent: list[OutMessage] = []

    async def send(self, msg: OutMessage, target: str | None = None) -> None:
        self.sent.append(msg)


def test_a_crashed_command_marks_its_row_failed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ports = ServicePorts(status=lambda: {}, tasks=lambda _n: [], cancel=lambda _t: {})
    hub = MessagingSubsystem(Bus(), lambda *_: None, lambda: None, tmp_path, ports)  # type: ignore[arg-type]
    hub.section = MessagingSection(users={"telegram:1": "write"})
    hub.runner.reconfigure()
    chat = Chat()

    async def crash(_inbound: Inbound, _reply: Any) -> None:
        raise RuntimeError("the disk went away")  # a failure outside the command's own error handling

    hub.runner.run = crash  # type: ignore[method-assign]

    async def main() -> tuple[dict[str, str], list[str]]:
        hub.store = MessagingStore(tmp_path)
        hub.running = True
        inbound = Inbound("telegram", "1", "100", "/status", "update-1")
        assert hub.receive(chat, inbound)  # type: ignore[arg-type]
        await hub._handling.wait(10)
        await hub._handling.wait(10)  # the apology is a task of its own
        states = hub.store.states("telegram")
        # the apology waits in the bridge's outbox (its courier delivers it; none runs in this test)
        queued = [str(r[0]) for r in hub.store.db.execute("SELECT message FROM outbox WHERE bridge = 'telegram'")]
        await hub.stop()
        return states, queued

    with caplog.at_level(logging.ERROR):
        states, queued = asyncio.run(main())
    assert states == {"update-1": "failed"}
    assert any("the disk went away" in m for m in queued) or any("the disk went away" in m.text for m in chat.sent)
    assert any("telegram command update-1 failed" in r.getMessage() for r in caplog.records)
    again = MessagingStore(tmp_path)
    try:
        assert again.pending("telegram") == []  # a failed command is not re-run (or re-apologized) at start
    finally:
        again.close()
