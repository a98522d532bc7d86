"""The JSON-RPC 2.0 protocol: framing, error codes (from ``wire``), and every method's params.

Shared by the service and every typed client (bridges, the REPL), so both sides agree on one definition.
Imports only msgspec; the plain client (``aiwg_service.client``) needs only ``wire``.

Framing: one JSON value per line (UTF-8, ``\\n``-terminated), both ways.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

# framing and error codes live in ``wire`` (stdlib only, for the client); re-exported here for the service
from .wire import (  # noqa: F401  (re-exported)
    ALREADY_DECIDED,
    CONFIG_INVALID,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    JSONRPC,
    MAX_LINE,
    METHOD_NOT_FOUND,
    NOT_ALLOWED,
    NOT_FOUND,
    PARSE_ERROR,
    SERVER_BUSY,
    RpcError,
)

MAX_QUOTE = 200  # bytes of client input a log line or an error message may repeat
MAX_PATH = 4096  # PATH_MAX: longer path params are refused before they reach the file system
MAX_NAME = 255  # NAME_MAX: the longest path component
MAX_OFFSET = 2**53 - 1  # the largest integer every JSON client (JavaScript's Number) holds exactly
#: Deepest nesting of arrays and objects in one param's value: checked on the raw bytes before any handler
#: sees it, so that nothing deeper reaches a store, the bus or an encoder (msgspec refuses ~1,000 levels).
MAX_DEPTH = 64

ID = int | float | str | None


class Request(Struct, omit_defaults=True):
    """A request or notification envelope; ``params`` stays raw until the method is known."""

    jsonrpc: Literal["2.0"]
    method: str
    params: Raw = Raw(b"")
    id: ID | UnsetType = UNSET

    @property
    def is_notification(self) -> bool:
        return self.id is UNSET


class ErrorObject(Struct, omit_defaults=True):
    code: int
    message: str
    data: Any = UNSET


class Response(Struct):
    """A reply; UNSET result/error are left out, jsonrpc and id never are."""

    jsonrpc: str = JSONRPC
    id: ID = None
    result: Any = UNSET
    error: ErrorObject | UnsetType = UNSET


class Notification(Struct):
    jsonrpc: str = JSONRPC
    method: str = ""
    params: Any = UNSET


# -- events: what the bus carries and clients receive ------------------------------------------------


class Event(Struct, omit_defaults=True):
    """One event on the bus. ``id`` sorts by time; ``project`` is the root path or None; ``seq`` is the bus's
    sequence number, rising for the life of the state directory (0: never published, e.g. a rule test)."""

    id: str
    type: str
    time: str
    project: str | None = None
    source: str = ""
    data: dict[str, Any] = {}
    seq: int = 0


# -- params: one Struct per method; unknown params are refused so that typos surface ----------------


class Params(Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class NoParams(Params):
    pass


class ProjectPathParams(Params):
    path: Annotated[str, Meta(min_length=1)]


class ReloadParams(Params):
    pass


class TrustParams(Params):
    path: Annotated[str, Meta(min_length=1)]
    #: the content the user saw and allowed; refused if the file changed since
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")] | None = None


TaskState = Literal["queued", "running", "completed", "failed", "timeout", "cancelled", "interrupted"]
TaskSource = Literal["cli", "rule", "cron", "chat", "messaging", "webhook", "session"]
Limit = Annotated[int, Meta(ge=1, le=1000)]


Priority = Annotated[int, Meta(ge=-1000, le=1000)]
#: An agent profile, or a Claude Code subagent (``claude --agent NAME``) if it is a plain identifier
#: (checked by ``tasks.model.split_agent``).
AgentName = Annotated[str, Meta(min_length=1, max_length=128)]


class TaskSubmitParams(Params):
    prompt: Annotated[str, Meta(min_length=1)]
    agent: AgentName | None = None
    #: The AIWG CLI sends ``parseInt`` of its flag, so a non-number arrives as null: null is the default.
    priority: Priority | None = None
    project: str | None = None
    timeout: Annotated[float, Meta(gt=0, le=366 * 86400)] | None = None  # seconds
    wait: bool = False
    source: TaskSource = "cli"
    #: This task's own budget (USD): the run is stopped when its cost passes it.
    max_budget_usd: Annotated[float, Meta(ge=0)] | None = None
    #: Why it runs (event_id, rule, run_id, approval, conversation, turn, cron_job, webhook_delivery,
    #: cli...); default ``{"cli": true}``.  See ``trace.get``.
    origin: dict[str, Any] | None = None
    #: Where it runs (an executor's name); default: the profile's ``executor`` (``local``).
    executor: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)] | None = None


class TaskIdParams(Params):
    taskId: Annotated[str, Meta(min_length=1)]


class TaskListParams(Params):
    state: TaskState | None = None
    project: str | None = None
    source: TaskSource | None = None
    limit: Limit = 20
    before: str | None = None  # keyset cursor: ids older than this one


class TaskStatsParams(Params):
    project: str | None = None


class TaskLogsParams(Params):
    taskId: Annotated[str, Meta(min_length=1)]
    offset: Annotated[int, Meta(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_LINE // 2)] = 65536
    follow: bool = False


class RuleIdParams(Params):
    ruleId: str | None = None  # the AIWG daemon's clients may omit it: then it means every rule
    project: str | None = None


class AutomationStatusParams(Params):
    project: str | None = None


class AutomationTraceParams(Params):
    ruleId: Annotated[str, Meta(min_length=1)]
    runId: str | None = None
    project: str | None = None
    limit: Limit = 20


class AutomationTestParams(Params):
    ruleId: Annotated[str, Meta(min_length=1)]
    event: dict[str, Any] | None = None
    project: str | None = None


ApprovalState = Literal["pending", "approved", "rejected", "expired"]


class ApprovalListParams(Params):
    state: ApprovalState | Literal["all"] = "pending"
    project: str | None = None
    limit: Limit = 100


class ApprovalDecideParams(Params):
    approvalId: Annotated[str, Meta(min_length=1)]
    reason: Annotated[str, Meta(max_length=2000)] | None = None
    #: ignored: the service sets ``via`` from the channel that delivered the decision (``cli`` for the socket),
    #: so a local process cannot claim to be a chat user an approval names; kept so older clients still work
    via: Annotated[str, Meta(min_length=1, max_length=40)] = "rpc"


class SecretQuery(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
    kind: Literal["github", "gitlab", "standard", "token"] = "standard"


class WebhookSecretsParams(Params):
    secrets: Annotated[list[SecretQuery], Meta(max_length=1000)]


class WebhookTestParams(Params):
    hookId: Annotated[str, Meta(min_length=1)]
    #: sent as an HTTP header: no control characters (CR/LF would split it)
    event: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None
    payload: Any = None


EventPattern = Annotated[str, Meta(max_length=256)]


Seq = Annotated[int, Meta(ge=0, le=MAX_OFFSET)]


class EventsListParams(Params):
    type: EventPattern | None = None  # exact type or wildcard pattern: file.*, *
    project: str | None = None
    since: Seq | str | None = None  # a sequence number, an event id or an ISO-8601 time
    limit: Limit = 100


class EventsQueryParams(Params):
    """Events after a sequence number, oldest first: how a follower catches up (``next`` pages on)."""

    since: Seq | None = None  # omitted: the newest ``limit``
    type: EventPattern | None = None
    project: str | None = None
    limit: Limit = 1000


class EventsSubscribeParams(Params):
    type: EventPattern = "*"
    project: str | None = None
    #: resume: first send every retained event after this sequence number (a ``gap`` first if some are gone)
    since: Seq | None = None


class EventIdParams(Params):
    id: Annotated[str, Meta(min_length=1)]


class ChatSendParams(Params):
    message: Annotated[str, Meta(min_length=1)]
    priority: Priority | None = None  # null or omitted: 5, the AIWG daemon's default (chat goes first)
    project: str | None = None
    conversation: str | None = None  # omitted: a new conversation
    #: continue a conversation a chat bridge started (it becomes this terminal's; the chat gets a new one)
    take: bool = False


class ChatListParams(Params):
    project: str | None = None
    terminal: bool = False  # only conversations started at a terminal (not by a chat bridge)
    limit: Limit = 50


class ChatConversationParams(Params):
    conversation: Annotated[str, Meta(min_length=1)]


class ChatForkParams(Params):
    conversation: Annotated[str, Meta(min_length=1)]
    at_turn: Annotated[int, Meta(ge=1)] | None = None  # omitted: after the last turn


class SessionNewParams(Params):
    project: str | None = None
    agent: str | None = None  # claude's --agent
    worktree: str | None = None  # a new branch, checked out in a fresh worktree
    prompt: str | None = None


class SessionListParams(Params):
    project: str | None = None
    all: bool = False  # include sessions that exited


class SessionIdParams(Params):
    id: Annotated[str, Meta(min_length=1)]


class SessionSendParams(Params):
    id: Annotated[str, Meta(min_length=1)]
    text: Annotated[str, Meta(min_length=1)]


class SessionKillParams(Params):
    id: Annotated[str, Meta(min_length=1)]
    keep_worktree: bool = False


class DashboardParams(Params):
    name: Annotated[str, Meta(min_length=1)] = "aiwg"
    project: str | None = None


class MessagingNotifyParams(Params):
    message: Annotated[str, Meta(min_length=1, max_length=100_000)]
    channel: str | None = None  # a bridge (telegram), bridge:target (slack:C0123), or every bridge
    severity: Literal["info", "warning", "critical"] = "info"


class DaemonStopParams(Params):
    #: Stop running agents too (after ``daemon.stop_timeout_seconds``); by default they keep running
    #: and the next start re-adopts them.
    agents: bool = False


class BudgetStatusParams(Params):
    project: str | None = None


class TraceGetParams(Params):
    #: Any event, rule run, task or conversation id.
    id: Annotated[str, Meta(min_length=1, max_length=200)]


class SandboxCheckParams(Params):
    #: One agent profile (default: every profile the project can use).
    profile: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    project: str | None = None


class DoctorParams(Params):
    project: str | None = None


#: Every method and its params type. The namespace is fixed here so clients and later subsystems agree.
METHODS: dict[str, type[Params]] = {
    "ping": NoParams,
    "daemon.status": NoParams,
    "daemon.reload": ReloadParams,
    "project.add": ProjectPathParams,
    "project.remove": ProjectPathParams,
    "project.list": NoParams,
    "trust.show": ProjectPathParams,
    "trust.allow": TrustParams,
    "trust.revoke": ProjectPathParams,
    "task.submit": TaskSubmitParams,
    "task.cancel": TaskIdParams,
    "task.list": TaskListParams,
    "task.get": TaskIdParams,
    "task.stats": TaskStatsParams,
    "task.logs": TaskLogsParams,
    "automation.status": AutomationStatusParams,
    "automation.enable": RuleIdParams,
    "automation.disable": RuleIdParams,
    "automation.trace": AutomationTraceParams,
    "automation.test": AutomationTestParams,
    "approval.list": ApprovalListParams,
    "approval.approve": ApprovalDecideParams,
    "approval.reject": ApprovalDecideParams,
    "webhook.list": NoParams,
    "webhook.test": WebhookTestParams,
    "webhook.secrets": WebhookSecretsParams,
    "events.list": EventsListParams,
    "events.dlq": NoParams,
    "events.replay": EventIdParams,
    "events.subscribe": EventsSubscribeParams,
    "events.query": EventsQueryParams,
    "cron.list": NoParams,
    "chat.send": ChatSendParams,
    "messaging.status": NoParams,
    "messaging.notify": MessagingNotifyParams,
    "chat.list": ChatListParams,
    "chat.history": ChatConversationParams,
    "chat.fork": ChatForkParams,
    "chat.delete": ChatConversationParams,
    "session.new": SessionNewParams,
    "session.list": SessionListParams,
    "session.capture": SessionIdParams,
    "session.send": SessionSendParams,
    "session.kill": SessionKillParams,
    "session.dashboard": DashboardParams,
    "daemon.stop": DaemonStopParams,
    "budget.status": BudgetStatusParams,
    "trace.get": TraceGetParams,
    "web.login": NoParams,
    "executors.list": NoParams,
    "sandbox.check": SandboxCheckParams,
    "doctor": DoctorParams,
}

#: Methods that only read: still answered while the service is stopping (everything else is refused).
READ_ONLY = frozenset({"ping", "daemon.status", "project.list", "task.get", "task.list", "task.stats", "task.logs",
                       "automation.status", "automation.trace", "events.list", "events.query", "events.dlq",
                       "cron.list",
                       "messaging.status", "chat.list", "chat.history", "session.list", "session.capture",
                       "budget.status", "trace.get", "executors.list", "approval.list", "webhook.list",
                       "trust.show", "sandbox.check", "doctor"})

#: Server-to-client notifications on a streaming connection.
NOTIFY_EVENT = "events.event"
#: A follower missed events that fell out of the history: ``{"from", "to", "lost"}`` (sequence numbers).
NOTIFY_GAP = "events.gap"
NOTIFY_TASK_OUTPUT = "task.output"

def utc_now() -> str:
    """Now as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: the one time format of events and tasks on the wire."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(Request)
_raw_list_decoder = msgspec.json.Decoder(list[Raw])
_param_decoders: dict[type, msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<f>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<f>[^`]+)`")


def encode(obj: Any) -> bytes:
    """Encode one frame (with its newline)."""
    return _encoder.encode(obj) + b"\n"


def encode_result(req_id: ID, result: Any) -> bytes:
    return b'{"jsonrpc":"2.0","id":%b,"result":%b}\n' % (_encoder.encode(req_id), _encoder.encode(result))


def encode_error(req_id: ID, err: RpcError) -> bytes:
    obj = ErrorObject(err.code, err.message, UNSET if err.data is None else err.data)
    return encode(Response(id=req_id, error=obj))


def decode_request(raw: bytes) -> Request:
    return _request_decoder.decode(raw)


def decode_batch(raw: bytes) -> list[Raw]:
    return _raw_list_decoder.decode(raw)


def _split_validation(err: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.priority`": return (param path, problem)."""
    m = _AT.match(str(err))
    assert m is not None
    msg, path = m.group("msg"), (m.group("path") or "")
    for rx in (_MISSING, _UNKNOWN):
        fm = rx.match(msg)
        if fm:
            path = f"{path}.{fm.group('f')}"
            msg = "is required" if rx is _MISSING else "is not a parameter of this method"
            break
    else:
        msg = msg.replace("`", "")
    return path.lstrip("."), msg


def quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """``repr`` of client input cut to ``limit`` bytes, for log lines and error messages: a client can
    send a megabyte, and every line that repeats it must stay short."""
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value[: limit + 1]))
    else:
        text = repr(value if not isinstance(value, str) or len(value) <= limit * 4 else value[: limit * 4])
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


#: Params holding a file-system path: checked against NAME_MAX/PATH_MAX before they reach the kernel.
PATH_PARAMS = frozenset({"path", "project"})


def check_str_param(name: str, value: str) -> None:
    """Refuse what no file name or command line can carry: a NUL byte, an over-long path or component."""
    if "\x00" in value:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {name}: contains a NUL byte",
                       {"param": name, "problem": "contains a NUL byte"})
    if name in PATH_PARAMS:
        raw = value.encode("utf-8", "surrogateescape")
        problem = None
        if len(raw) > MAX_PATH:
            problem = f"longer than {MAX_PATH} bytes"
        elif any(len(part) > MAX_NAME for part in raw.split(b"/")):
            problem = f"has a path component longer than {MAX_NAME} bytes"
        if problem:
            raise RpcError(INVALID_PARAMS, f"Invalid params: {name}: {problem}", {"param": name, "problem": problem})


def _cut(text: str, limit: int = MAX_QUOTE) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


_STRING = re.compile(rb'"(?:[^"\\\\]|\\\\.)*"', re.S)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``data`` (brackets inside strings do not count);
    when there are few brackets, their count (an upper bound, found without scanning)."""
    opened = data.count(b"[") + data.count(b"{")
    if opened <= MAX_DEPTH:
        return opened
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _check_depth(method: str, data: bytes) -> None:
    """-32602 naming the param whose value nests deeper than ``MAX_DEPTH`` (params themselves are level 1)."""
    if nesting_depth(data) <= MAX_DEPTH + 1:
        return
    fields = METHODS[method].__struct_fields__
    try:
        top = msgspec.json.decode(data, type=dict[str, Raw] | list[Raw])
    except (msgspec.DecodeError, RecursionError):
        top = {}
    items = top.items() if isinstance(top, dict) else zip(fields, top, strict=False)
    name = next((k for k, v in items if nesting_depth(bytes(v)) > MAX_DEPTH), None)
    problem = f"nested deeper than {MAX_DEPTH} levels"
    name = _cut(name) if name is not None else None
    raise RpcError(INVALID_PARAMS, f"Invalid params: {name}: {problem}" if name else f"Invalid params: {problem}",
                   {"param": name, "problem": problem})


def decode_params(method: str, raw: Raw) -> Params:
    """Decode and validate a method's params in one pass; raise -32602 naming the bad param."""
    ptype = METHODS[method]
    data = bytes(raw)
    first = data.lstrip(b" \t\r\n")[:1]
    if data:
        _check_depth(method, data)
    if not data:
        data = b"{}"
    elif first not in (b"{", b"["):
        raise RpcError(INVALID_REQUEST, "Invalid Request: params must be an object or an array")
    elif first == b"[":
        # by-position params: map onto the fields in declaration order
        try:
            values = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:  # invalid UTF-8 inside a string: the envelope kept it raw
            raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from exc
        except RecursionError:
            raise RpcError(PARSE_ERROR, "Parse error: params nested too deeply") from None
        fields = ptype.__struct_fields__
        if len(values) > len(fields):
            raise RpcError(INVALID_PARAMS, f"Invalid params: {method} takes at most {len(fields)} params")
        data = _encoder.encode(dict(zip(fields, values, strict=False)))
    dec = _param_decoders.get(ptype)
    if dec is None:
        dec = _param_decoders[ptype] = msgspec.json.Decoder(ptype)
    try:
        params = dec.decode(data)
    except msgspec.ValidationError as exc:
        param, problem = _split_validation(exc)
        param, problem = _cut(param), _cut(problem)  # both may repeat client input (a key, a value)
        if problem == "is required":
            message = f"Missing required parameter: {param}"
        elif param:
            message = f"Invalid params: {param}: {problem}"
        else:
            message = f"Invalid params: {problem}"
        raise RpcError(INVALID_PARAMS, message, {"param": param or None, "problem": problem}) from exc
    except msgspec.DecodeError as exc:  # invalid UTF-8 inside a string: the envelope kept it raw
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from exc
    except RecursionError:
        raise RpcError(PARSE_ERROR, "Parse error: params nested too deeply") from None
    for name in ptype.__struct_fields__:
        value = getattr(params, name)
        if type(value) is str:
            check_str_param(name, value)
    return params


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
