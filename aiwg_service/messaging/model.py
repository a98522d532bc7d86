"""The hub's vocabulary: a message going out, a command coming in, and a bridge's visible state."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Button:
    """An approval button: ``action`` is approve or reject, ``value`` the approval id."""

    label: str
    action: Literal["approve", "reject"]
    value: str


@dataclass
class OutMessage:
    """One message, platform-neutral: plain text in, each bridge escapes and formats it."""

    text: str
    title: str | None = None
    severity: Severity = "info"
    buttons: list[Button] = field(default_factory=list)
    #: set when the message answers a command: quote nothing, no severity badge
    reply: bool = False
    #: for the one who typed or pressed only, where the platform can (an ephemeral message, a button's alert)
    private: bool = False


@dataclass
class Inbound:
    """A command as a bridge received it. ``user_id`` is the platform's id, never a display name."""

    platform: str
    user_id: str
    chat_id: str  # where the reply goes, and whose conversation /ask continues
    text: str
    key: str  # the platform's own id for de-duplication (update_id, envelope/event id, message id)
    display: str = ""  # for logs only
    #: the bridge's fast reply path for this one command (an interaction response); None: send to chat_id
    responder: Callable[[OutMessage], Awaitable[None]] | None = None
    received: float = field(default_factory=time.monotonic)
    #: the platform's way to answer only the one who acted (a refusal); None: answer in the chat
    private_reply: Callable[[OutMessage], Awaitable[None]] | None = None
    #: told the task id of the turn an /ask started (the inbox keeps it: the answer survives a restart)
    on_task: Callable[[str], None] | None = None

    @property
    def user_key(self) -> str:
        return f"{self.platform}:{self.user_id}"

    @property
    def chat_key(self) -> str:
        return f"{self.platform}:{self.chat_id}"

    def record(self) -> dict[str, Any]:
        """What the inbox persists: enough to run the command and reply after a restart."""
        return {"platform": self.platform, "user_id": self.user_id, "chat_id": self.chat_id, "text": self.text,
                "key": self.key, "display": self.display}


class SendError(Exception):
    """A message could not be delivered. ``permanent``: retrying cannot help (401, chat not found)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass
class BridgeState:
    """What ``aiwgctl messaging status`` and ``daemon.status`` show for one bridge."""

    name: str
    enabled: bool = False
    state: str = "disabled"  # disabled | connecting | connected | sending-only | error | stopped
    detail: str = ""
    last_error: str | None = None
    last_error_at: float | None = None
    messages_in: int = 0
    messages_out: int = 0
    send_failures: int = 0
    reconnects: int = 0
    inbound: bool = False

    def error(self, text: str) -> None:
        self.last_error = text
        self.last_error_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "state": self.state, "detail": self.detail, "inbound": self.inbound,
                "last_error": self.last_error,
                "last_error_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_error_at))
                if self.last_error_at else None,
                "messages_in": self.messages_in, "messages_out": self.messages_out,
                "send_failures": self.send_failures, "reconnects": self.reconnects}
