"""Task and agent-profile model shared by the service and its clients.

Kept to msgspec + stdlib so that ``aiwgctl`` can import it without paying for
asyncio, sqlite3 or the supervisor.  Times are ISO-8601 UTC strings with
millisecond precision and a trailing ``Z`` (fixed width, so they sort
lexically in SQLite and read well in JSON).
"""

from __future__ import annotations

import enum
import os
import re
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from ..protocol import utc_now
from ..sandbox.schema import SandboxSection

__all__ = [
    "FINISHED_STATES",
    "AgentProfile",
    "Emit",
    "Task",
    "TaskSource",
    "TaskState",
    "new_task_id",
    "parse_time",
    "profile_problems",
    "utc_now",
]


#: ``emit(event_type, project_root_or_None, data)``: synchronous, must not block.
Emit = Callable[[str, str | None, dict[str, Any]], None]


class TaskState(enum.StrEnum):
    """Lifecycle states; ``interrupted`` is transient (then queued or failed); ``held`` waits for
    a budget (``held_reason``) and goes back to ``queued`` when the budget allows."""

    queued = "queued"
    held = "held"
    running = "running"
    completed = "completed"
    failed = "failed"
    timeout = "timeout"
    cancelled = "cancelled"
    interrupted = "interrupted"


FINISHED_STATES: frozenset[TaskState] = frozenset(
    {TaskState.completed, TaskState.failed, TaskState.timeout, TaskState.cancelled}
)


class TaskSource(enum.StrEnum):
    """Who asked for the task; used for filtering and accounting."""

    cli = "cli"
    rule = "rule"
    cron = "cron"
    chat = "chat"
    messaging = "messaging"
    webhook = "webhook"
    session = "session"


NonNegInt = Annotated[int, Meta(ge=0)]
PosInt = Annotated[int, Meta(ge=1)]
NonNegFloat = Annotated[float, Meta(ge=0)]
SIZE_PATTERN = r"^([0-9]+[KMGT]?|[0-9]+%|infinity)$"
PERCENT_PATTERN = r"^[0-9]+%$"
#: systemd size, e.g. "512M", "2G", "infinity".
SizeStr = Annotated[str, Meta(pattern=SIZE_PATTERN)]
#: systemd CPUQuota, e.g. "50%", "200%".
PercentStr = Annotated[str, Meta(pattern=PERCENT_PATTERN)]
EnvName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
ProfileName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class Task(Struct, kw_only=True, omit_defaults=False):
    """One unit of agent work.  Serialised as-is to clients (JSON) and to SQLite columns."""

    id: str
    project: str
    prompt: str
    agent: str = "claude"
    priority: int = 0
    state: TaskState = TaskState.queued
    source: TaskSource = TaskSource.cli
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    #: Number of times the task was started (a re-queued task is started again).
    attempts: NonNegInt = 0
    #: Number of times a run was cut short by a service crash/stop (history of ``interrupted``).
    interruptions: NonNegInt = 0
    pid: int | None = None
    #: "<boot_id>:<starttime ticks>" of ``pid``; lets recovery tell our process from a recycled pid.
    pid_start: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cache_read_tokens: int | None = None
    num_turns: int | None = None
    result: str | None = None
    log_path: str | None = None
    output_truncated: bool = False
    timeout_s: Annotated[float, Meta(gt=0)] | None = None
    error: str | None = None
    #: A Claude Code subagent (``claude --agent NAME``): what the AIWG daemon's ``agent`` means when it
    #: names no profile of ours. ``agent`` is then the profile that runs it (``claude``).
    subagent: str | None = None
    #: Where it runs (``agents.<profile>.executor``; ``local`` by default) and the executor's
    #: handle for the current attempt (JSON; lets a restarted service re-adopt the run).
    executor: str | None = None
    handle: dict[str, Any] | None = None
    #: Why it was started: ``{"event_id", "rule", "run_id", "approval", "conversation", "turn",
    #: "cron_job", "webhook_delivery", "cli"}``, whichever apply (see ``aiwgctl trace``).
    origin: dict[str, Any] = {}
    #: Why the service asked the run to stop (cancel, timeout, budget, stop), persisted before it
    #: signals, so the outcome is recorded right even if the service restarts meanwhile.
    stop_reason: str | None = None
    #: How many times a restarted service re-adopted this run (it kept running meanwhile).
    adopted: NonNegInt = 0
    #: When a graceful stop of the service left the run going.
    detached_at: str | None = None
    #: ``reported`` (from the stream's result), ``missing`` or ``malformed`` (cost unknown).
    cost_status: str | None = None
    #: This task's own budget (USD); the run is stopped when its cost passes it.
    max_budget_usd: float | None = None
    #: Why a ``held`` task waits (which budget, spent and limit).
    held_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (enums as strings) for events and JSON-RPC results."""
        return msgspec.to_builtins(self)

    def run_seconds(self) -> float | None:
        if not self.started_at or not self.finished_at:
            return None
        return parse_time(self.finished_at) - parse_time(self.started_at)


#: A Claude Code subagent name (``claude --agent NAME``): letters, digits, ``_``, ``-``, ``:``, not starting
#: with ``-``, so it can never become an option or a path.
SUBAGENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_:-]{0,127}")


def split_agent(name: str | None, profiles: Collection[str]) -> tuple[str, str | None]:
    """``(profile, subagent)`` for an ``agent`` as the AIWG daemon's clients and rules mean it: a profile
    of ours if one has that name, else a Claude Code subagent run by the ``claude`` profile. ValueError for
    a name that is neither."""
    if not name:
        return "claude", None
    if name in profiles:
        return name, None
    if SUBAGENT_NAME.fullmatch(name):
        return "claude", name
    raise ValueError(f"is neither an agent profile (known: {', '.join(sorted(profiles))}) nor a subagent name "
                     "(letters, digits, _, - and :, not starting with -)")


AgentKind = Literal["claude", "shell", "command"]


class Prices(Struct, kw_only=True, forbid_unknown_fields=True):
    """USD per million tokens."""

    input: NonNegFloat = 0.0
    output: NonNegFloat = 0.0
    cache_write: NonNegFloat = 0.0
    cache_read: NonNegFloat = 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.input, self.output, self.cache_write, self.cache_read)


class AgentProfile(Struct, kw_only=True):
    """How to run an agent.  ``kind`` picks a built-in argv; ``command`` overrides it.

    ``command`` is an argv template; every ``{prompt}`` in it is replaced by the
    prompt text.  It is exec'd directly, never through a shell, unless the
    template itself names one (e.g. ``["/bin/sh", "-c", "{prompt}"]``).

    Unknown keys are ignored (the config loader reports them as warnings, like
    every other section), so a profile written for a newer version still loads.
    """

    kind: AgentKind = "claude"
    command: list[str] | None = None
    model: str | None = None
    max_turns: PosInt | None = None
    allowed_tools: list[str] = []
    permission_mode: str | None = None
    args: list[str] = []
    env: list[EnvName] = []
    #: How many times an interrupted task is re-queued; 0 = mark it failed.
    retry: Annotated[int, Meta(ge=0, le=100)] = 1
    memory_max: SizeStr | None = None
    cpu_quota: PercentStr | None = None
    max_output_mb: Annotated[int, Meta(ge=1, le=10_000)] = 10
    timeout_minutes: Annotated[float, Meta(gt=0)] | None = None
    #: Where tasks of this profile run (an executor's name; ``local`` by default) and that
    #: executor's own settings (e.g. a host or a partition).
    executor: ProfileName = "local"
    executor_options: dict[str, Any] = {}
    #: Per-task budget (USD): passed to claude as ``--max-budget-usd`` (``budget_flag``) and
    #: enforced from the stream either way.
    max_budget_usd: NonNegFloat | None = None
    budget_flag: bool = True
    #: USD per million tokens, to estimate a run's cost while it runs (the stream reports the
    #: real figure only at the end); without it only the reported figure counts.
    price_per_mtok: Prices | None = None
    #: The agent's confinement (``sandbox/``): on by default for every kind; ``"off"`` only in the service's
    #: own config (a project file can only narrow it, see ``sandbox.schema.narrow``).
    sandbox: SandboxSection | Literal["on", "off"] = "on"

    def __post_init__(self) -> None:
        if self.kind not in ("claude", "shell", "command"):
            raise ValueError(f"unknown agent kind {self.kind!r} (expected claude, shell or command)")
        if self.kind == "command" and not self.command:
            raise ValueError("kind 'command' needs a non-empty 'command' argv")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")


def profile_problems(profile: AgentProfile) -> list[tuple[str, str]]:
    """Checks beyond types, as (field, problem): a ``command`` template that never uses ``{prompt}``
    would run the agent without its task, silently."""
    out: list[tuple[str, str]] = []
    if profile.command and not any("{prompt}" in part for part in profile.command):
        out.append(("command", "must contain {prompt} (where the task's prompt goes)"))
    for i, part in enumerate(profile.command or ()):
        if "{prompt}" in part and part != "{prompt}":
            out.append((f"command[{i}]", f'"{{prompt}}" must be an argv element of its own, not part of {part!r}: '
                                         "a prompt glued to an option could change what the option says"))
    return out


# --- ids and times -----------------------------------------------------------

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase: sorts like the numbers
_id_lock = threading.Lock()
_last_ms = 0
_seq = 0


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_task_id() -> str:
    """``t-`` + 9 base32 chars of ms since epoch + 3 chars of sequence.

    14 chars, sortable by creation within a process (monotonic even if the
    clock steps back), ~4000 ids per ms before borrowing the next ms.  The
    sequence starts at a random point each ms so ids from two processes
    started in the same ms rarely collide (the store's primary key catches it).
    """
    global _last_ms, _seq
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _seq = int.from_bytes(os.urandom(2)) & 0x7FF  # leave half the space for bursts
        else:
            _seq += 1
            if _seq >= 1 << 15:
                _last_ms += 1
                _seq = 0
        return "t-" + _b32(_last_ms, 9) + _b32(_seq, 3)


def format_time(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(s: str) -> float:
    """Inverse of :func:`utc_now` (epoch seconds)."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
