"""A configured hook as the listener uses it, and the publish port; free of aiohttp, so a service without hooks
never imports it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import utc_now
from .verify import Verdict

#: the bus's publish: (type, project, data, source) -> event
Publish = Callable[[str, "str | None", dict[str, Any], str], Any]


@dataclass(slots=True)
class LiveHook:
    """A configured hook, ready to verify: its key is resolved from the env or a credential at apply time."""

    id: str
    kind: str
    project: str | None
    key: bytes
    events: frozenset[str] | None
    verify: Callable[..., Verdict] = field(repr=False)
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    last: dict[str, Any] | None = None

    def record(self, result: str, status: int, delivery_id: str | None) -> None:
        self.last = {"time": utc_now(), "result": result, "status": status, "delivery_id": delivery_id}
