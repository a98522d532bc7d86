"""The configuration schema, its defaults, and validation with JSON-path errors.

One schema serves both files: the service-wide ``$XDG_CONFIG_HOME/aiwg/daemon.json`` (its ``daemon`` and
``agents`` sections apply service-wide) and each project's ``<root>/.aiwg/daemon.json`` (the AIWG daemon's
shape: ``daemon``, ``watch``, ``schedule``, plus ``agents`` and ``rules``).

Validation walks the schema itself, so every field is checked and *all* problems are reported at once, each
as ``file: json.path: problem``. Unknown keys are warnings. Secrets never sit in config: a field that holds
one is named ``*_env`` and holds the name of an environment variable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import msgspec.inspect as mi
from msgspec import Meta, Struct, field

from .tasks.model import PERCENT_PATTERN, SIZE_PATTERN, AgentKind, AgentProfile, profile_problems

EX_CONFIG = 78  # sysexits.h: configuration error; the unit's RestartPreventExitStatus= names it

EventKind = Literal["create", "modify", "delete"]
LogLevel = Literal["debug", "info", "warning", "error"]
Positive = Annotated[int, Meta(ge=1)]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EXTENSION = r"^\.[^/\s]+$"
JOB_ID = r"^[A-Za-z0-9_.:-]+$"
EnvName = Annotated[str, Meta(pattern=ENV_NAME)]

#: Readable wording for each pattern the schema uses ({v} is the offending value, JSON-quoted).
PATTERN_HELP: dict[str, str] = {
    ENV_NAME: "{v} must be the name of an environment variable",
    EXTENSION: '{v} must start with a dot, like ".ts"',
    JOB_ID: "{v} may use only letters, digits and _ . : -",
    SIZE_PATTERN: '{v} must be a size like "512M", "2G", "50%" or "infinity"',
    PERCENT_PATTERN: '{v} must be a percentage like "50%" or "200%"',
}
#: Literal types keep their declared order in messages (msgspec sorts them).
LITERAL_ORDER: dict[frozenset[Any], tuple[Any, ...]] = {}


def register_literal(*aliases: Any) -> None:
    for a in aliases:
        LITERAL_ORDER[frozenset(get_args(a))] = get_args(a)


register_literal(EventKind, LogLevel, AgentKind)


class LogConfig(Struct, forbid_unknown_fields=False):
    max_size_mb: Annotated[int, Meta(ge=1, le=10_000)] = 50
    max_files: Annotated[int, Meta(ge=0, le=100)] = 5
    level: LogLevel = "info"


class DaemonSection(Struct):
    heartbeat_interval_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 30
    max_parallel_actions: Annotated[int, Meta(ge=1, le=256)] = 3
    action_timeout_minutes: Annotated[int, Meta(ge=1, le=7 * 24 * 60)] = 120
    stop_timeout_seconds: Annotated[int, Meta(ge=0, le=3600)] = 60
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 30
    log: LogConfig = field(default_factory=LogConfig)


class WatchPath(Struct):
    path: Annotated[str, Meta(min_length=1)]
    events: list[EventKind] = field(default_factory=lambda: ["create", "modify", "delete"])
    ignore: list[str] = field(default_factory=list)
    extensions: list[Annotated[str, Meta(pattern=EXTENSION)]] = field(default_factory=list)


def _default_watch_paths() -> list[WatchPath]:
    return [
        WatchPath(".aiwg/", ["create", "modify", "delete"], ["*.tmp", "working/**", "daemon/**"]),
        WatchPath("src/", ["modify"], extensions=[".ts", ".js", ".mjs"]),
    ]


class WatchSection(Struct):
    enabled: bool = True
    paths: list[WatchPath] = field(default_factory=_default_watch_paths)
    debounce_ms: Annotated[int, Meta(ge=0, le=600_000)] = 2000


class CronJob(Struct):
    id: Annotated[str, Meta(min_length=1, pattern=JOB_ID)]
    cron: Annotated[str, Meta(min_length=1)]
    action: Annotated[str, Meta(min_length=1)] = "doctor"
    prompt: str | None = None
    agent: str | None = None
    tz: str | None = None
    catch_up: bool = False
    enabled: bool = True


def _default_jobs() -> list[CronJob]:
    return [CronJob("health-check", "0 */6 * * *", "doctor")]


class ScheduleSection(Struct):
    enabled: bool = True
    jobs: list[CronJob] = field(default_factory=_default_jobs)


class WebhookSection(Struct):
    enabled: bool = False
    port: Annotated[int, Meta(ge=1, le=65535)] = 9471
    secret_env: EnvName = "AIWG_WEBHOOK_SECRET"


class Config(Struct):
    """One config file. Sections later issues fill in are typed loosely here until they land."""

    daemon: DaemonSection = field(default_factory=DaemonSection)
    watch: WatchSection = field(default_factory=WatchSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    #: Agent profiles by name: the service file's apply everywhere; a project's file adds or overrides
    #: profiles for that project only.
    agents: dict[str, AgentProfile] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    webhook: WebhookSection = field(default_factory=WebhookSection)
    messaging: dict[str, Any] = field(default_factory=dict)


#: Extra checks that need more than types (cron syntax, time zones, regexes). Subsystems add theirs.
SemanticCheck = Callable[[Config], list[tuple[str, str]]]
SEMANTIC_CHECKS: list[SemanticCheck] = []

_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_?key|webhook_url|credential)s?$", re.I)


class ConfigError(Exception):
    """Invalid config: ``errors`` are complete lines (``file: path: problem``)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class Loaded(msgspec.Struct):
    config: Config
    warnings: list[str]


# -- the schema walker -----------------------------------------------------------------------------


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def show_value(value: Any) -> str:
    """A value as error messages quote it: JSON for scalars, \"an object\" / \"a list\" for containers."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value, ensure_ascii=False)


_TYPE_NAMES = {
    mi.BoolType: "a boolean",
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.StrType: "a string",
    mi.ListType: "a list",
    mi.DictType: "an object",
    mi.StructType: "an object",
    mi.NoneType: "null",
}


def _anything(_v: Any) -> bool:
    return True


_TYPE_CHECKS: dict[type, Callable[[Any], bool]] = {
    mi.BoolType: lambda v: isinstance(v, bool),
    mi.IntType: lambda v: isinstance(v, int) and not isinstance(v, bool),
    mi.FloatType: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    mi.StrType: lambda v: isinstance(v, str),
    mi.ListType: lambda v: isinstance(v, list),
    mi.DictType: lambda v: isinstance(v, dict),
    mi.StructType: lambda v: isinstance(v, dict),
    mi.NoneType: lambda v: v is None,
}


def _constraint_errors(value: float | int | str | list[Any], t: Any) -> str | None:
    for attr, op, word in (("ge", float.__ge__, ">="), ("gt", float.__gt__, ">"),
                           ("le", float.__le__, "<="), ("lt", float.__lt__, "<")):
        bound = getattr(t, attr, None)
        if bound is not None and isinstance(value, int | float) and not op(float(value), float(bound)):
            return f"{show_value(value)} must be {word} {bound}"
    min_len = getattr(t, "min_length", None)
    if min_len is not None and len(value) < min_len:  # type: ignore[arg-type]
        return "must not be empty" if min_len == 1 else f"must have at least {min_len} items"
    pattern = getattr(t, "pattern", None)
    if pattern is not None and isinstance(value, str) and not re.search(pattern, value):
        return PATTERN_HELP.get(pattern, "{v} does not match " + pattern).format(v=show_value(value))
    return None


def _walk(value: Any, t: Any, path: str, errors: list[tuple[str, str]], warnings: list[tuple[str, str]]) -> None:
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.UnionType):
        if value is None and any(isinstance(x, mi.NoneType) for x in t.types):
            return
        candidates = [x for x in t.types if not isinstance(x, mi.NoneType)]
        best: list[tuple[str, str]] | None = None
        for cand in candidates:
            errs: list[tuple[str, str]] = []
            _walk(value, cand, path, errs, [])
            if not errs:
                _walk(value, cand, path, [], warnings)
                return
            if best is None or len(errs) < len(best):
                best = errs
        errors.extend(best or [(path, "has an unsupported value")])
        return
    if isinstance(t, mi.LiteralType):
        if value not in t.values:
            allowed = LITERAL_ORDER.get(frozenset(t.values), t.values)
            errors.append((path, f"{show_value(value)} is not one of {', '.join(map(str, allowed))}"))
        return
    expected = _TYPE_NAMES.get(type(t), "a valid value")
    if not _TYPE_CHECKS.get(type(t), _anything)(value):
        errors.append((path, f"must be {expected}, not {show_value(value)}"))
        return
    problem = _constraint_errors(value, t) if not isinstance(t, mi.StructType | mi.DictType) else None
    if problem:
        errors.append((path, problem))
        return
    if isinstance(t, mi.ListType):
        for i, item in enumerate(value):
            _walk(item, t.item_type, _join(path, i), errors, warnings)
    elif isinstance(t, mi.DictType):
        for k, v in value.items():
            _walk(v, t.value_type, _join(path, k), errors, warnings)
    elif isinstance(t, mi.StructType):
        known = {f.encode_name: f for f in t.fields}
        for f in t.fields:
            if f.encode_name in value:
                _walk(value[f.encode_name], f.type, _join(path, f.encode_name), errors, warnings)
            elif f.required:
                errors.append((_join(path, f.encode_name), "is required"))
        for k in value:
            if k not in known:
                _unknown_key(k, value[k], _join(path, k), errors, warnings)


def _unknown_key(key: str, value: Any, path: str, errors: list[tuple[str, str]],
                 warnings: list[tuple[str, str]]) -> None:
    if _SECRET_KEY.search(key) and isinstance(value, str) and value:
        errors.append((path, f"looks like a secret; keep it out of config: set an environment variable and "
                             f"name it in \"{key}_env\""))
    else:
        warnings.append((path, "unknown key, ignored"))


def _secret_scan(value: Any, path: str, errors: list[tuple[str, str]]) -> None:
    """Loosely typed sections (agents, rules, messaging) still must not carry secrets."""
    if isinstance(value, dict):
        for k, v in value.items():
            p = _join(path, k)
            if k.endswith("_env"):
                if not (isinstance(v, str) and re.search(ENV_NAME, v)):
                    errors.append((p, PATTERN_HELP[ENV_NAME].format(v=show_value(v))))
            elif _SECRET_KEY.search(k) and isinstance(v, str) and v:
                errors.append((p, f"looks like a secret; keep it out of config: set an environment variable "
                                  f"and name it in \"{k}_env\""))
            else:
                _secret_scan(v, p, errors)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _secret_scan(v, _join(path, i), errors)


_CONFIG_TYPE = mi.type_info(Config)


def parse(data: bytes | str, display: str) -> Loaded:
    """Validate ``data`` fully; raise ConfigError listing every problem as ``display: path: problem``."""
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{display}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    return validate(raw, display)


def validate(raw: Any, display: str) -> Loaded:
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"{display}: the top level must be a JSON object"])
    _walk(raw, _CONFIG_TYPE, "", errors, warnings)
    for section in ("rules", "messaging"):  # agents are typed: the walker checks their keys
        if section in raw:
            _secret_scan(raw[section], section, errors)
    cfg: Config | None = None
    if not errors:
        try:
            cfg = msgspec.convert(raw, Config)
        except msgspec.ValidationError as exc:  # a __post_init__ check the walker cannot see
            raise ConfigError([f"{display}: {p}: {m}" for p, m in _convert_errors(raw, exc)]) from None
        for check in SEMANTIC_CHECKS:
            errors.extend(check(cfg))
    if errors:
        raise ConfigError([f"{display}: {p or '(top level)'}: {m}" for p, m in errors])
    assert cfg is not None
    return Loaded(cfg, [f"{display}: {p}: {m}" for p, m in warnings])


def _convert_errors(raw: dict[str, Any], exc: msgspec.ValidationError) -> list[tuple[str, str]]:
    """Name the profile a __post_init__ refused (msgspec says ``$.agents[...]`` for a dict value)."""
    out: list[tuple[str, str]] = []
    agents = raw.get("agents")
    for name, value in (agents.items() if isinstance(agents, dict) else ()):
        try:
            msgspec.convert(value, AgentProfile)
        except msgspec.ValidationError as e:
            out.append((_join("agents", name), str(e).partition(" - at `$")[0]))
    return out or [("(top level)", str(exc))]


def _check_schedule(cfg: Config) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    from .events.cron import validate_expression, validate_timezone

    for i, job in enumerate(cfg.schedule.jobs):
        if job.id in seen:
            errors.append((f"schedule.jobs[{i}].id", f"duplicate job id {show_value(job.id)}"))
        seen.add(job.id)
        problem = validate_expression(job.cron)
        if problem:
            errors.append((f"schedule.jobs[{i}].cron", problem))
        if job.tz:
            problem = validate_timezone(job.tz)
            if problem:
                errors.append((f"schedule.jobs[{i}].tz", problem))
    return errors


SEMANTIC_CHECKS.append(_check_schedule)

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_agents(cfg: Config) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for name, profile in cfg.agents.items():
        if not PROFILE_NAME.match(name):
            errors.append((_join("agents", name), "a profile name may use only letters, digits and _ . - "
                                                  "(at most 64, starting with a letter or digit)"))
        errors.extend((_join(_join("agents", name), f), m) for f, m in profile_problems(profile))
    return errors


SEMANTIC_CHECKS.append(_check_agents)


def _check_rules(cfg: Config) -> list[tuple[str, str]]:
    """Rules (both forms) and the schedule.jobs shorthand, checked by the engine's own schema code."""
    from .rules.schema import check_config  # lazy: keeps `aiwgctl` start-up free of the engine's imports

    return check_config(cfg)


SEMANTIC_CHECKS.append(_check_rules)


def _check_messaging(cfg: Config) -> list[tuple[str, str]]:
    """Bridges, users and subscriptions, checked by the messaging package's own schema."""
    from .messaging.schema import check  # lazy, as above

    return check(cfg.messaging)


SEMANTIC_CHECKS.append(_check_messaging)


def default_dict() -> dict[str, Any]:
    """The default project file, exactly the AIWG daemon's (what a new project gets written)."""
    return {
        "daemon": {
            "heartbeat_interval_seconds": 30,
            "max_parallel_actions": 3,
            "action_timeout_minutes": 120,
            "log": {"max_size_mb": 50, "max_files": 5, "level": "info"},
        },
        "watch": {
            "enabled": True,
            "paths": [
                {"path": ".aiwg/", "events": ["create", "modify", "delete"],
                 "ignore": ["*.tmp", "working/**", "daemon/**"]},
                {"path": "src/", "events": ["modify"], "extensions": [".ts", ".js", ".mjs"]},
            ],
            "debounce_ms": 2000,
        },
        "schedule": {"enabled": True, "jobs": [{"id": "health-check", "cron": "0 */6 * * *", "action": "doctor"}]},
    }


def display_name(path: Path, root: Path | None = None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def load_file(path: Path, root: Path | None = None) -> Loaded:
    """Load one file; a missing file is the defaults."""
    display = display_name(path, root)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Loaded(Config(), [])
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror}"]) from None
    return parse(data, display)


def write_default(path: Path) -> bool:
    """Write the default project file if there is none; True if written. Atomic, never clobbers."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(default_dict(), indent=2) + "\n")
    try:
        os.link(tmp, path)  # fails if someone wrote one meanwhile: theirs wins
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
