"""The configuration schema, its defaults, and validation with JSON-path errors.

One schema serves both files: the service-wide ``$XDG_CONFIG_HOME/aiwg/daemon.json`` (its ``daemon`` and
``agents`` sections apply service-wide) and each project's ``<root>/.aiwg/daemon.json`` (the AIWG daemon's
shape: ``daemon``, ``watch``, ``schedule``, plus ``agents`` and ``rules``).

Validation walks the schema itself, so every field is checked and *all* problems are reported at once, each
as ``file: json.path: problem``. Unknown keys are warnings. Secrets never sit in config: a field that holds
one is named ``*_env`` and holds the name of an environment variable.

This module owns only the ``daemon`` section and the machinery. Every subsystem registers the schema of its
own section (``register_section``) from its ``schema`` module, and ``aiwg_service.schemas`` imports them all;
the document type ``Config`` is assembled from what is registered, so this module imports no subsystem.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import msgspec.inspect as mi
from msgspec import Meta, Struct, field

from . import paths, safefs
from .policy import redact

EX_CONFIG = 78  # sysexits.h: configuration error; the unit's RestartPreventExitStatus= names it

LogLevel = Literal["debug", "info", "warning", "error"]
Positive = Annotated[int, Meta(ge=1)]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, Meta(pattern=ENV_NAME)]

#: Readable wording for each pattern the schema uses ({v} is the offending value, JSON-quoted).
PATTERN_HELP: dict[str, str] = {
    ENV_NAME: "{v} must be the name of an environment variable",
}
#: Literal types keep their declared order in messages (msgspec sorts them).
LITERAL_ORDER: dict[frozenset[Any], tuple[Any, ...]] = {}


def register_literal(*aliases: Any) -> None:
    for a in aliases:
        LITERAL_ORDER[frozenset(get_args(a))] = get_args(a)


def register_pattern(pattern: str, help_text: str) -> None:
    """Word a pattern's error for people: ``{v}`` is the offending value, JSON-quoted."""
    PATTERN_HELP[pattern] = help_text


register_literal(LogLevel)


class LogConfig(Struct, forbid_unknown_fields=False):
    max_size_mb: Annotated[int, Meta(ge=1, le=10_000)] = 50
    max_files: Annotated[int, Meta(ge=0, le=100)] = 5
    level: LogLevel = "info"


class DaemonSection(Struct):
    heartbeat_interval_seconds: Annotated[int, Meta(ge=1, le=86_400)] = 30
    max_parallel_actions: Annotated[int, Meta(ge=1, le=256)] = 3
    #: minutes, fractions too (the AIWG daemon's key is a number): 0.5 is thirty seconds
    action_timeout_minutes: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 120
    stop_timeout_seconds: Annotated[int, Meta(ge=0, le=3600)] = 60
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 30
    #: shell conditions and actions of every rule together; more wait their turn (the service file's applies)
    max_rule_processes: Annotated[int, Meta(ge=1, le=256)] = 8
    #: Client connections open at once; one more is answered with an error and closed.
    max_connections: Annotated[int, Meta(ge=1, le=65_536)] = 256
    #: The bus's history (what ``events.query {since}`` and a resuming follower can still fetch): at most this
    #: many events and this many bytes of them, whichever is reached first.
    event_history: Annotated[int, Meta(ge=100, le=1_000_000)] = 10_000
    event_history_bytes: Annotated[int, Meta(ge=65_536, le=1 << 30)] = 8 * 1024 * 1024
    log: LogConfig = field(default_factory=LogConfig)


# -- the section registry --------------------------------------------------------------------------


@dataclass
class Section:
    """One top-level key of the document: its type, its default, and checks beyond types."""

    name: str
    type: Any
    default: Callable[[], Any]
    checks: list[SemanticCheck] = dc_field(default_factory=list)
    #: a loosely typed section (dicts of anything): its ``*_env`` values are checked to be variable names here,
    #: as a typed section's schema does (every section is scanned for secrets by key name and value shape)
    scan_secrets: bool = False
    #: what a loosely typed section's entries really are (its own code converts them): for the generated
    #: reference (docs/gen_config_reference.py), never for validation
    doc_type: Any = None


SemanticCheck = Callable[[Any], list[tuple[str, str]]]
SECTIONS: dict[str, Section] = {}
_document: Any = None


def register_section(name: str, type_: Any, default: Callable[[], Any], *, check: SemanticCheck | None = None,
                     scan_secrets: bool = False, doc_type: Any = None) -> None:
    """Add a top-level section; ``check(cfg)`` gets the whole document, for checks that span sections."""
    global _document
    SECTIONS[name] = Section(name, type_, default, [check] if check else [], scan_secrets, doc_type)
    _document = None


#: Keys read from the service-wide file only (JSON path -> why): in a project's file they are named as ignored.
SERVICE_ONLY: dict[str, str] = {}
SERVICE_ONLY_DEFAULT_WHY = "only the service-wide file sets it"


def service_only(path: str, why: str = SERVICE_ONLY_DEFAULT_WHY) -> None:
    """Declare a key (``messaging.users``) or a whole section (``web``) that a project's file cannot set."""
    SERVICE_ONLY[path] = why


def _service_only_warnings(raw: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for path, why in SERVICE_ONLY.items():
        node: Any = raw
        for part in path.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            out.append((path, f"ignored in a project's file: {why}"))
    return out


_MISSING = object()


#: Checks across files: ``check(service config, service file name, {project file name: config}) -> [line]``
#: (each line ``file: path: problem``), run at start and at every reload, on what each project is served with.
FilesCheck = Callable[[Any, str, dict[str, Any]], list[str]]
FILES_CHECKS: list[FilesCheck] = []


def add_files_check(check: FilesCheck) -> None:
    FILES_CHECKS.append(check)


def add_check(check: SemanticCheck) -> None:
    """A check over the whole document that no single section owns (e.g. rules over schedule jobs)."""
    SEMANTIC_CHECKS.append(check)


_complete = False


def sections_complete() -> None:
    """Called once every section is registered (``aiwg_service.schemas`` does it)."""
    global _complete
    _complete = True


def document_type() -> Any:
    """The ``Config`` struct assembled from the registered sections (rebuilt when one is added)."""
    global _document, _CONFIG_TYPE
    if not _complete:
        # a document built from some of its sections would call the others "unknown keys": refuse loudly
        raise RuntimeError("config sections are not all registered: import aiwg_service.schemas first")
    if _document is None:
        fields = [(s.name, s.type, field(default_factory=s.default)) for s in SECTIONS.values()]
        _document = msgspec.defstruct("Config", fields, module=__name__)
        _CONFIG_TYPE = mi.type_info(_document)
    return _document


def __getattr__(name: str) -> Any:
    # ``config.Config`` is the assembled document type; ask for it late, after the sections registered
    if name == "Config":
        return document_type()
    raise AttributeError(name)


register_section("daemon", DaemonSection, DaemonSection)


#: Checks over the whole document that no single section owns.
SEMANTIC_CHECKS: list[SemanticCheck] = []

#: a value that names an environment variable (``"token": "GITHUB_TOKEN"``) is not the secret itself
_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_?key|access_?key|private_?key|webhook_url|credential|"
                         r"authorization)s?$", re.I)


class ConfigError(Exception):
    """Invalid config: ``errors`` are complete lines (``file: path: problem``); ``warnings`` (unknown keys,
    service-only keys in a project's file) are kept too, so a check reports every problem at once."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.warnings = warnings or []


class Loaded(msgspec.Struct):
    config: Any  # the assembled ``Config``
    warnings: list[str]
    raw: Any = None  # the parsed JSON, as written (what trust.needs reads)
    sha256: str | None = None  # of the file's bytes; None when there is no file
    data: bytes | None = None  # the file's bytes (kept as a project's last good copy)


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
        helptext = PATTERN_HELP.get(pattern)
        return helptext.format(v=show_value(value)) if helptext else f"{show_value(value)} does not match {pattern}"
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


def _secret_scan(value: Any, path: str, errors: list[tuple[str, str]], loose: bool = True) -> None:
    """No section may carry a secret: caught by the key's name (``api_key``, ``Authorization``) and by the
    value's shape (a GitHub token, a Slack webhook URL, ``https://user:pass@``, ``--api-key=...``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            p = _join(path, k)
            if k.endswith("_env"):  # a typed section's schema checks these itself
                if loose and not (isinstance(v, str) and re.search(ENV_NAME, v)):
                    errors.append((p, PATTERN_HELP[ENV_NAME].format(v=show_value(v))))
            elif _SECRET_KEY.search(k) and isinstance(v, str) and v and not _VAR_NAME.fullmatch(v):
                errors.append((p, f"looks like a secret; keep it out of config: set an environment variable "
                                  f"and name it in \"{k}_env\""))
            else:
                _secret_scan(v, p, errors, loose)
    elif isinstance(value, list):
        before = len(errors)
        for i, v in enumerate(value):
            _secret_scan(v, _join(path, i), errors, loose)
        words = [v for v in value if isinstance(v, str)]
        kind = redact.find(" ".join(words)) if len(errors) == before and len(words) > 1 else None
        if kind:  # an argv list: ["--api-key", "sk-..."] says it only in two elements
            errors.append((path, f"holds what looks like a secret ({kind}); keep it out of config: put it in an "
                                 f"environment variable or a systemd credential and name that instead"))
    elif isinstance(value, str):
        kind = redact.find(value)
        if kind:
            errors.append((path, f"holds what looks like a secret ({kind}); keep it out of config: put it in an "
                                 f"environment variable or a systemd credential and name that instead"))


_CONFIG_TYPE: Any = None


#: Deepest nesting of arrays and objects a config may have; the real schema needs about eight levels.
MAX_DEPTH = 64
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def nesting_depth(data: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, found without parsing it (strings skipped):
    checked before any parser recurses into a document of 200 KB of ``[``."""
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for opening in brackets.translate(bytes.maketrans(b"[{]}", b"\x01\x01\x00\x00")):
        depth = depth + 1 if opening else depth - 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                break
    return deepest


def parse(data: bytes | str, display: str, project: bool = False) -> Loaded:
    """Validate ``data`` fully; raise ConfigError listing every problem as ``display: path: problem``."""
    as_bytes = data.encode() if isinstance(data, str) else data
    if nesting_depth(as_bytes) > MAX_DEPTH:
        raise ConfigError([f"{display}: (top level): arrays and objects nest deeper than {MAX_DEPTH} levels"])
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{display}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    except (RecursionError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError([f"{display}: (top level): not a JSON document ({exc.__class__.__name__})"]) from None
    return validate(raw, display, project)


def validate(raw: Any, display: str, project: bool = False) -> Loaded:
    """``project``: the file is a project's, where service-only keys are named as ignored."""
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([f"{display}: the top level must be a JSON object"])
    doc = document_type()
    _walk(raw, _CONFIG_TYPE, "", errors, warnings)
    if project:
        warnings.extend(_service_only_warnings(raw))
    shown = [f"{display}: {p}: {m}" for p, m in warnings]
    for section in SECTIONS.values():
        if section.name in raw:
            _secret_scan(raw[section.name], section.name, errors, section.scan_secrets)
    cfg: Any = None
    if not errors:
        try:
            cfg = msgspec.convert(raw, doc)
        except msgspec.ValidationError as exc:  # a __post_init__ check the walker cannot see
            raise ConfigError([f"{display}: {p}: {m}" for p, m in _convert_errors(raw, exc)], shown) from None
        for section in SECTIONS.values():
            for check in section.checks:
                errors.extend(check(cfg))
        for check in SEMANTIC_CHECKS:
            errors.extend(check(cfg))
    if errors:  # the walker and the secret scan may both see one unknown secret-named key: say it once
        raise ConfigError([f"{display}: {p or '(top level)'}: {m}" for p, m in dict.fromkeys(errors)], shown)
    assert cfg is not None
    return Loaded(cfg, shown, raw)


def _convert_errors(raw: dict[str, Any], exc: msgspec.ValidationError) -> list[tuple[str, str]]:
    """Name the section (and, for a dict section, the entry) that a __post_init__ refused.

    msgspec says ``$.agents[...]`` for a dict value; converting each section alone finds the real key.
    """
    out: list[tuple[str, str]] = []
    for section in SECTIONS.values():
        value = raw.get(section.name)
        if value is None:
            continue
        try:
            msgspec.convert(value, section.type)
            continue
        except msgspec.ValidationError as e:
            whole = str(e).partition(" - at `$")[0]
        value_type = getattr(mi.type_info(section.type), "value_type", None)
        if isinstance(value, dict) and value_type is not None:
            for key, item in value.items():
                try:
                    msgspec.convert(item, section.type.__args__[1])
                except msgspec.ValidationError as e:
                    out.append((_join(section.name, key), str(e).partition(" - at `$")[0]))
        else:
            out.append((section.name, whole))
    return out or [("(top level)", str(exc))]


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


#: Checks that need the project root (watch paths resolved on disk): ``check(cfg, root) -> [(path, problem)]``.
ROOT_CHECKS: list[Callable[[Any, str], list[tuple[str, str]]]] = []


def add_root_check(check: Callable[[Any, str], list[tuple[str, str]]]) -> None:
    ROOT_CHECKS.append(check)


def project_root_of(path: Path) -> str | None:
    """The project a ``<root>/.aiwg/daemon.json`` belongs to (its real path), else None."""
    if path.name == "daemon.json" and path.parent.name == ".aiwg":
        return os.path.realpath(path.parent.parent)
    return None


def load_file(path: Path, root: Path | None = None) -> Loaded:
    """Load one file; a missing file is the defaults. Only a regular file of at most 1 MiB is read."""
    display = display_name(path, root)
    try:
        data = safefs.read_limited(path)
    except FileNotFoundError:
        return Loaded(document_type()(), [])
    except OSError as exc:
        raise ConfigError([f"{display}: cannot read: {exc.strerror or exc}"]) from None
    return load_bytes(data, path, display)


#: ``daemon`` keys a project's file may set for itself (its tasks' parallelism and timeout, its own
#: ``.aiwg/daemon/daemon.log``); the others apply to the whole service and are read from its file only.
PROJECT_DAEMON_KEYS = frozenset({"max_parallel_actions", "action_timeout_minutes", "log"})


def service_only_warnings(raw: Any, display: str) -> list[str]:
    """A project's file setting a service-wide ``daemon`` key: named as ignored, with where it belongs."""
    section = raw.get("daemon") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        return []
    defaults = msgspec.to_builtins(DaemonSection())
    return [f"{display}: daemon.{k}: applies to the whole service, so a project's file cannot set it (ignored); "
            f"set it in the service's {paths.service_config_file()}"
            for k, v in section.items() if k not in PROJECT_DAEMON_KEYS and k in defaults and v != defaults[k]]


def load_bytes(data: bytes, path: Path, display: str) -> Loaded:
    """Validate a file's bytes (read now, or a project's last good copy) as the file at ``path``."""
    project = project_root_of(path)
    loaded = parse(data, display, project is not None)
    if project is not None:
        loaded.warnings.extend(service_only_warnings(loaded.raw, display))
        problems = [x for check in ROOT_CHECKS for x in check(loaded.config, project)]
        if problems:
            raise ConfigError([f"{display}: {p}: {m}" for p, m in problems], loaded.warnings)
    loaded.sha256 = hashlib.sha256(data).hexdigest()
    loaded.data = data
    return loaded


def write_default(path: Path) -> bool:
    """Write the default project file (``<root>/.aiwg/daemon.json``) if there is none; True if written.

    Never clobbers, never follows a symlinked ``.aiwg``, and the temp file has a random name."""
    root = os.path.realpath(path.parent.parent)
    data = (json.dumps(default_dict(), indent=2) + "\n").encode()
    with safefs.project_subdir(root, path.parent.name) as fd:
        return safefs.write_new(fd, path.name, data)


def resolve_root(path: str) -> str:
    """A project's identity: its real, absolute path."""
    return str(Path(path).expanduser().resolve())


@dataclass
class Project:
    root: str
    config: Any  # the assembled ``Config``
    warnings: list[str] = dc_field(default_factory=list)
    persistent: bool = True
    sha256: str | None = None  # of the config file's bytes (None: no file, the defaults)
    needs_trust: list[str] = dc_field(default_factory=list)  # what it could run (``trust.needs``)
    untrusted: str | None = None  # why it may not run them now; None when trusted (or nothing to trust)
    #: why its file on disk could not be used; it runs its last good config meanwhile (empty: all is well)
    errors: list[str] = dc_field(default_factory=list)
    last_good: str | None = None  # where the config it runs came from when ``errors``: "memory" or "saved"

    @property
    def state(self) -> str:
        return "failed" if self.errors else "ok"

    def info(self) -> dict[str, Any]:
        out = {"path": self.root, "persistent": self.persistent, "warnings": self.warnings,
               "config": str(paths.project_config_file(self.root)), "trusted": self.untrusted is None,
               "untrusted_reason": self.untrusted, "needs_trust": self.needs_trust, "state": self.state,
               "served": True, "errors": self.errors}
        if self.errors:
            out["reason"] = (f"{self.errors[0]} (serving its last good config"
                             f"{' saved from an earlier run' if self.last_good == 'saved' else ''})")
        return out


@dataclass
class FailedProject:
    """A project whose config could not be loaded and that has no good config to fall back on: not served."""

    root: str
    persistent: bool
    errors: list[str]

    def info(self) -> dict[str, Any]:
        return {"path": self.root, "persistent": self.persistent, "warnings": [],
                "config": str(paths.project_config_file(self.root)), "trusted": False, "untrusted_reason": None,
                "needs_trust": [], "state": "failed", "served": False, "errors": self.errors,
                "reason": f"{self.errors[0] if self.errors else 'cannot be loaded'} (not served)"}


@dataclass
class Configs:
    """Everything loaded: the service-wide file and each project's file. Replaced whole on reload.

    Subsystems get a callable returning the current one (a read-only view): they never keep a copy.
    """

    service: Any  # the assembled ``Config``
    service_warnings: list[str]
    projects: dict[str, Project]
    #: projects that are not served because their config failed and none good was ever seen
    failed: dict[str, FailedProject] = dc_field(default_factory=dict)

    def failures(self) -> list[dict[str, Any]]:
        """Every failed project (served from its last good config or not served), as listed."""
        return [pr.info() for pr in self.projects.values() if pr.errors] + [f.info() for f in self.failed.values()]
