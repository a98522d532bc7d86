"""Rule schema: validate both rule forms (and the schedule.jobs shorthand) and compile them into ``Rule``s.

One pass does both jobs, so what ``aiwgctl config check`` accepts is exactly what the engine runs. Errors are
``(json path, problem)`` pairs whose path names the rule, e.g. ``rules[2] (lint-fix): conditions[0].operator``.

Two forms:
- the AIWG daemon's: ``{id, trigger: {type?, source?, pattern?}, conditions: [{field, operator, value}],
  action: {type: agent|notify|webhook, ...}, cooldownMs?, requiresApproval?}`` (works unchanged);
- the richer one: ``{id, triggers: [...], conditions: [...], actions: [...], mode, max, cooldown_seconds,
  max_runs_per_minute, ignore_own_events}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import show_value
from ..events.bus import compile_pattern
from ..protocol import Event
from . import actions as A
from . import conditions as C
from . import regexes
from .matching import MISSING, Glob, compile_glob, get_field
from .regexes import RegexTimeout, UserRegex

if TYPE_CHECKING:
    from ..events.section import CronJob

MODES = ("single", "queued", "restart", "parallel")
AIWG_ACTIONS = ("agent", "notify", "webhook")
ACTION_KINDS = ("agent", "shell", "notify", "doctor", "emit", "webhook", "approve")
ON_TIMEOUT = ("reject", "approve")
DEFAULT_APPROVAL_MINUTES = 60.0
CONDITION_KINDS = ("shell", "match", "time", "not", "any", "all")
MATCH_HOW = ("equals", "glob", "regex")
EXPECT = ("success", "fail")
DEFAULT_MAX = 10
DEFAULT_MAX_RUNS_PER_MINUTE = 30
DEFAULT_SHELL_TIMEOUT = 60.0
#: sane limits: past them a config is refused with a clear error, not accepted and then run away with
MAX_RULES = 2_000  # per project, schedule jobs included
MAX_JOBS = 200
MAX_PER_RULE = 50  # triggers, conditions, actions, globs per trigger
MAX_PARALLEL = 100  # a rule's "max"
MAX_RUNS_PER_MINUTE = 600
AIWG_KEYS = {"id", "description", "enabled", "trigger", "conditions", "action", "cooldownMs", "requiresApproval"}
RICH_KEYS = {"id", "description", "enabled", "triggers", "conditions", "actions", "mode", "max", "cooldown_seconds",
             "max_runs_per_minute", "ignore_own_events", "env",
             "requires_approval"}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRIGGER_KEYS = {"type", "paths", "agent", "source", "job_id", "data"}
SCHEDULE_PREFIX = "schedule:"


# -- compiled forms -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Trigger:
    """One trigger. The index matches ``type``; ``matches`` checks everything else."""

    type: str
    type_is_exact: bool
    type_match: Callable[[str], bool]
    text: str
    source: str | None = None
    agent: str | None = None
    job_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    globs: list[Glob] = field(default_factory=list)
    regex: UserRegex | None = None  # the AIWG form's pattern over "type:source"

    def matches(self, event: Event, paths: list[str]) -> bool:
        if self.source is not None and event.source != self.source:
            return False
        if self.regex is not None:
            try:
                if not self.regex.search(f"{event.type}:{event.source}"):
                    return False
            except RegexTimeout:
                return False
        d = event.data
        if self.job_id is not None and d.get("job_id") != self.job_id:
            return False
        if self.agent is not None and d.get("agent") != self.agent:
            return False
        for k, want in self.data.items():
            got = get_field(event, k if k.startswith(("data.", "payload.")) else "data." + k)
            if got is MISSING or not C._eq(got, want):
                return False
        if self.globs:
            return any(g.matches(p) for p in paths for g in self.globs)
        return True

    def full_match(self, event: Event, paths: list[str]) -> bool:
        return self.type_match(event.type) and self.matches(event, paths)

    def synthetic_event(self, project: str) -> Event:
        """A plausible event for ``automation.test`` when the caller gives none."""
        t = self.type if self.type_is_exact else self.type.replace("*", "modify" if "file" in self.type else "x")
        data: dict[str, Any] = {k.removeprefix("data.").removeprefix("payload."): v for k, v in self.data.items()}
        if self.job_id is not None:
            data["job_id"] = self.job_id
        if self.agent is not None:
            data["agent"] = self.agent
        if self.globs:
            g = self.globs[0].text
            data["path"] = re.sub(r"\*\*/?", "", g).replace("*", "example").replace("?", "x")
        return Event("ev-test", t, "", project, self.source or "test", data)


@dataclass(slots=True)
class Rule:
    id: str
    project: str
    form: str  # "aiwg" | "rich" | "schedule"
    description: str = ""
    enabled: bool = True
    triggers: list[Trigger] = field(default_factory=list)
    conditions: list[C.Condition] = field(default_factory=list)
    actions: list[A.Action] = field(default_factory=list)
    mode: str = "single"
    max: int = DEFAULT_MAX
    cooldown_s: float = 0.0
    max_runs_per_minute: int = DEFAULT_MAX_RUNS_PER_MINUTE
    ignore_own_events: bool = True
    requires_approval: bool = False
    cron: str | None = None
    tz: str | None = None
    sync_conditions: bool = True
    #: environment variables its shell conditions and actions may see, beyond the safe base set
    env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.sync_conditions = all(c.is_sync for c in self.conditions)

    @property
    def needs_approval(self) -> bool:
        """A run of this rule may park for a human: ``requires_approval`` or an ``approve`` action."""
        return self.requires_approval or any(a.kind == "approve" for a in self.actions)

    def triggers_text(self) -> str:
        return "; ".join(t.text for t in self.triggers)


# -- the validator ------------------------------------------------------------------------------------------


class _V:
    """Collects (path, problem) pairs under one rule's prefix."""

    def __init__(self, errors: list[tuple[str, str]], base: str) -> None:
        self.errors, self.base = errors, base
        self.count = 0

    def err(self, path: str, problem: str) -> None:
        self.count += 1
        self.errors.append((f"{self.base}: {path}" if path else self.base, problem))

    def type_err(self, path: str, want: str, v: Any) -> None:
        self.err(path, f"must be {want}, not {show_value(v)}")

    def str_(self, d: dict[str, Any], key: str, path: str, *, required: bool = False,
             default: str | None = None) -> str | None:
        v = d.get(key, MISSING)
        p = f"{path}.{key}" if path else key
        if v is MISSING or v is None:
            if required:
                self.err(p, "is required")
            return default
        if not isinstance(v, str):
            self.type_err(p, "a string", v)
            return default
        if required and not v.strip():
            self.err(p, "must not be empty")
            return default
        return v

    def num(self, d: dict[str, Any], key: str, path: str, default: float, *, lo: float, hi: float | None = None,
            integer: bool = False, strict_lo: bool = False) -> float:
        v = d.get(key, MISSING)
        p = f"{path}.{key}" if path else key
        if v is MISSING or v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
            self.type_err(p, "an integer" if integer else "a number", v)
            return default
        if (v <= lo if strict_lo else v < lo) or (hi is not None and v > hi):
            rng = f"> {lo:g}" if strict_lo else f">= {lo:g}"
            self.err(p, f"{show_value(v)} must be {rng}" + (f" and <= {hi:g}" if hi is not None else ""))
            return default
        return v

    def bool_(self, d: dict[str, Any], key: str, path: str, default: bool) -> bool:
        v = d.get(key, MISSING)
        if v is MISSING or v is None:
            return default
        if not isinstance(v, bool):
            self.type_err(f"{path}.{key}" if path else key, "a boolean", v)
            return default
        return v

    def one_of(self, v: Any, allowed: tuple[str, ...], path: str) -> bool:
        if v not in allowed:
            self.err(path, f"{show_value(v)} is not one of {', '.join(allowed)}")
            return False
        return True

    def unknown(self, d: dict[str, Any], known: set[str], path: str, what: str) -> None:
        for k in d:
            if k not in known:
                self.err(f"{path}.{k}" if path else k, f"unknown key in {what} (known: {', '.join(sorted(known))})")

    def regex(self, v: str, path: str, hint: str = "") -> UserRegex | None:
        try:
            return UserRegex(v)
        except regexes.error as exc:
            self.err(path, f"{show_value(v)} is not a valid regular expression ({exc}){hint}")
            return None

    def glob(self, v: Any, path: str) -> Glob | None:
        if not isinstance(v, str):
            self.type_err(path, "a string (a glob like \"src/**/*.py\")", v)
            return None
        try:
            return compile_glob(v)
        except (ValueError, re.error) as exc:
            self.err(path, f"{show_value(v)} is not a valid glob: {exc}")
            return None


def _type_pattern(v: _V, t: str, path: str) -> tuple[bool, Callable[[str], bool]] | None:
    if not t.strip() or any(c.isspace() for c in t):
        v.err(path, f"{show_value(t)} is not an event type pattern (like \"file.modify\", \"file.*\" or \"*\")")
        return None
    exact = not any(c in t for c in "*?[")
    return exact, compile_pattern(t)


_PATTERN_HINT = ('; it is a regular expression over "type:source", such as "^file\\.(create|modify):watch$" - '
                 'a glob like "*.ts" is not a regular expression (the file name is in a condition on payload.path)')


def _priority(v: _V, d: dict[str, Any], path: str) -> int:
    p = d.get("priority", MISSING)
    if p is MISSING or p is None:
        return 0
    if isinstance(p, str) and p.lower() in A.PRIORITY_NAMES:
        return A.PRIORITY_NAMES[p.lower()]
    if isinstance(p, bool) or not isinstance(p, int) or not -1000 <= p <= 1000:
        v.err(f"{path}.priority", f"{show_value(p)} must be an integer from -1000 to 1000 or one of "
                                  f"{', '.join(A.PRIORITY_NAMES)}")
        return 0
    return p


# -- the AIWG form ------------------------------------------------------------------------------------------


def _aiwg_condition(v: _V, c: Any, path: str) -> C.Condition | None:
    if not isinstance(c, dict):
        v.type_err(path, "an object {field, operator, value}", c)
        return None
    n = v.count
    fld = v.str_(c, "field", path, required=True)
    op = c.get("operator", MISSING)
    if op is MISSING:
        v.err(f"{path}.operator", "is required")
    elif v.one_of(op, C.OPERATORS, f"{path}.operator") and op not in ("exists", "not_exists") \
            and "value" not in c:
        v.err(f"{path}.value", f"is required with operator {show_value(op)}")
    rx = None
    if op == "matches" and "value" in c:
        if not isinstance(c["value"], str):
            v.type_err(f"{path}.value", "a string (a regular expression)", c["value"])
        else:
            rx = v.regex(c["value"], f"{path}.value")
    v.unknown(c, {"field", "operator", "value"}, path, "a condition")
    if v.count > n or fld is None:
        return None
    return C.FieldCondition(fld, op, c.get("value"), rx)


def _aiwg_rule(v: _V, raw: dict[str, Any], rid: str, project: str) -> Rule | None:
    n = v.count
    trig = raw.get("trigger", MISSING)
    triggers: list[Trigger] = []
    if trig is MISSING or trig is None:
        v.err("trigger", "is required (an object {type?, source?, pattern?})")
    elif not isinstance(trig, dict):
        v.type_err("trigger", "an object {type?, source?, pattern?}", trig)
    else:
        v.unknown(trig, {"type", "source", "pattern"}, "trigger", "the trigger")
        t = v.str_(trig, "type", "trigger") or "*"
        tp = _type_pattern(v, t, "trigger.type")
        source = v.str_(trig, "source", "trigger")
        pat = v.str_(trig, "pattern", "trigger")
        rx = v.regex(pat, "trigger.pattern", _PATTERN_HINT) if pat is not None else None
        if tp is not None:
            parts = [t] + ([f"source={source}"] if source else []) + ([f"pattern={pat}"] if pat else [])
            triggers.append(Trigger(t, tp[0], tp[1], " ".join(parts), source=source, regex=rx))
    conds: list[C.Condition] = []
    rc = raw.get("conditions", [])
    if rc is not None and not isinstance(rc, list):
        v.type_err("conditions", "a list", rc)
    else:
        for i, c in enumerate(rc or []):
            cc = _aiwg_condition(v, c, f"conditions[{i}]")
            if cc is not None:
                conds.append(cc)
    acts: list[A.Action] = []
    act = raw.get("action", MISSING)
    if act is MISSING or act is None:
        v.err("action", "is required (an object {type: agent|notify|webhook, ...})")
    elif not isinstance(act, dict):
        v.type_err("action", "an object {type: agent|notify|webhook, ...}", act)
    else:
        at = act.get("type", MISSING)
        if at is MISSING:
            v.err("action.type", f"is required: one of {', '.join(AIWG_ACTIONS)}")
        elif v.one_of(at, AIWG_ACTIONS, "action.type"):
            if at == "agent":
                prompt = v.str_(act, "prompt", "action", required=True)
                agent = v.str_(act, "agent", "action")
                prio = _priority(v, act, "action")
                if prompt is not None:
                    acts.append(A.AgentAction(prompt, agent, prio, None))
            elif at == "notify":
                msg = v.str_(act, "message", "action", required=True)
                ch = v.str_(act, "channel", "action")
                if msg is not None:
                    acts.append(A.NotifyAction(msg, ch))
            else:
                url = v.str_(act, "url", "action", required=True)
                if url is not None and not url.startswith(("http://", "https://")):
                    v.err("action.url", f"{show_value(url)} must be an http:// or https:// URL")
                elif url is not None:
                    acts.append(A.WebhookAction(url, v.str_(act, "message", "action")))
    cooldown = v.num(raw, "cooldownMs", "", 0, lo=0) / 1000.0
    approval = v.bool_(raw, "requiresApproval", "", False)
    enabled = v.bool_(raw, "enabled", "", True)
    desc = v.str_(raw, "description", "") or ""
    for k in ("triggers", "actions", "mode", "max", "cooldown_seconds"):
        if k in raw:
            v.err(k, "belongs to the richer rule form; this rule uses the AIWG form (trigger/action): "
                     "use one form per rule")
    if v.count > n:
        return None
    # the AIWG daemon ran every match independently: parallel keeps that (its actions only queue or post)
    return Rule(rid, project, "aiwg", desc, enabled, triggers, conds, acts, "parallel", DEFAULT_MAX, cooldown,
                DEFAULT_MAX_RUNS_PER_MINUTE, True, approval)


# -- the richer form ----------------------------------------------------------------------------------------


def _rich_trigger(v: _V, t: Any, path: str) -> Trigger | None:
    if not isinstance(t, dict):
        v.type_err(path, "an object {type, paths?, source?, agent?, job_id?, data?}", t)
        return None
    n = v.count
    v.unknown(t, TRIGGER_KEYS, path, "a trigger")
    typ = v.str_(t, "type", path, required=True)
    tp = _type_pattern(v, typ, f"{path}.type") if typ is not None else None
    globs: list[Glob] = []
    ps = t.get("paths", [])
    if isinstance(ps, str):
        ps = [ps]
    if not isinstance(ps, list):
        v.type_err(f"{path}.paths", "a list of globs", ps)
    elif len(ps) > MAX_PER_RULE:
        v.err(f"{path}.paths", f"has {len(ps)} globs: at most {MAX_PER_RULE}")
    else:
        for j, g in enumerate(ps):
            cg = v.glob(g, f"{path}.paths[{j}]")
            if cg is not None:
                globs.append(cg)
    source = v.str_(t, "source", path)
    agent = v.str_(t, "agent", path)
    job_id = v.str_(t, "job_id", path)
    data = t.get("data", {})
    if not isinstance(data, dict):
        v.type_err(f"{path}.data", "an object {field: value}", data)
        data = {}
    if v.count > n or tp is None or typ is None:
        return None
    parts = [typ]
    if globs:
        parts.append(",".join(g.text for g in globs))
    parts += [f"{k}={x}" for k, x in (("source", source), ("agent", agent), ("job", job_id)) if x]
    parts += [f"{k}={x}" for k, x in data.items()]
    return Trigger(typ, tp[0], tp[1], " ".join(parts), source=source, agent=agent, job_id=job_id, data=data,
                   globs=globs)


_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def _time_condition(v: _V, t: Any, path: str) -> C.Condition | None:
    if not isinstance(t, dict):
        v.type_err(path, "an object {weekdays?, hours?, tz?}", t)
        return None
    n = v.count
    v.unknown(t, {"weekdays", "hours", "tz"}, path, "a time condition")
    days: set[int] | None = None
    wd = t.get("weekdays")
    if wd is not None:
        if not isinstance(wd, list) or not wd:
            v.type_err(f"{path}.weekdays", "a non-empty list like [\"mon\", \"fri\"]", wd)
        else:
            days = set()
            for j, d in enumerate(wd):
                key = d[:3].lower() if isinstance(d, str) else None
                if key not in C.WEEKDAYS:
                    v.err(f"{path}.weekdays[{j}]", f"{show_value(d)} is not one of {', '.join(C.WEEKDAYS)}")
                else:
                    days.add(C.WEEKDAYS.index(key))
    start = end = None
    hours = v.str_(t, "hours", path)
    if hours is not None:
        parts = hours.split("-")
        ms = [_HHMM.match(x.strip()) for x in parts] if len(parts) == 2 else []
        if len(ms) != 2 or not all(ms) or any(int(m.group(1)) > 24 or int(m.group(2)) > 59 for m in ms if m):
            v.err(f"{path}.hours", f"{show_value(hours)} must be a range like \"09:00-18:00\"")
        else:
            start, end = (int(m.group(1)) * 60 + int(m.group(2)) for m in ms if m)
    tz = None
    tzname = v.str_(t, "tz", path)
    if tzname is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            tz = ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError):
            v.err(f"{path}.tz", f"{show_value(tzname)} is not a known time zone (like \"Europe/Berlin\")")
    if v.count > n:
        return None
    return C.TimeCondition(days, start, end, tz, {k: t[k] for k in ("weekdays", "hours", "tz") if k in t})


def _rich_condition(v: _V, c: Any, path: str) -> C.Condition | None:
    if not isinstance(c, dict):
        v.type_err(path, f"an object with one of {', '.join(CONDITION_KINDS)} (or field/operator/value)", c)
        return None
    if "field" in c or "operator" in c:
        return _aiwg_condition(v, c, path)
    kinds = [k for k in CONDITION_KINDS if k in c]
    if len(kinds) != 1:
        if not kinds:
            v.err(path, f"unknown condition kind {', '.join(map(show_value, c)) or '(empty object)'}: "
                        f"use one of {', '.join(CONDITION_KINDS)}, or field/operator/value")
        else:
            v.err(path, f"has {' and '.join(kinds)}: one condition kind per object (wrap several in all/any)")
        return None
    kind = kinds[0]
    n = v.count
    if kind == "shell":
        v.unknown(c, {"shell", "timeout_seconds", "expect"}, path, "a shell condition")
        cmd = v.str_(c, "shell", path, required=True)
        timeout = v.num(c, "timeout_seconds", path, DEFAULT_SHELL_TIMEOUT, lo=0, hi=86_400, strict_lo=True)
        expect = c.get("expect", "success")
        v.one_of(expect, EXPECT, f"{path}.expect")
        if v.count > n or cmd is None:
            return None
        return C.ShellCondition(cmd, float(timeout), expect)
    if len(c) != 1:
        v.unknown(c, {kind}, path, f"a {kind} condition")
        return None
    body = c[kind]
    if kind == "match":
        p = f"{path}.match"
        if not isinstance(body, dict):
            v.type_err(p, "an object {field, equals|glob|regex}", body)
            return None
        v.unknown(body, {"field", *MATCH_HOW}, p, "a match condition")
        fld = v.str_(body, "field", p, required=True)
        hows = [h for h in MATCH_HOW if h in body]
        if len(hows) != 1:
            v.err(p, f"needs exactly one of {', '.join(MATCH_HOW)}")
            return None
        how = hows[0]
        val = body[how]
        compiled: Any = None
        if how == "glob":
            compiled = v.glob(val, f"{p}.glob")
        elif how == "regex":
            if not isinstance(val, str):
                v.type_err(f"{p}.regex", "a string", val)
            else:
                compiled = v.regex(val, f"{p}.regex")
        if v.count > n or fld is None:
            return None
        return C.MatchCondition(fld, how, val, compiled)
    if kind == "time":
        return _time_condition(v, body, f"{path}.time")
    if kind == "not":
        inner = _rich_condition(v, body, f"{path}.not")
        return C.Not(inner) if inner is not None else None
    p = f"{path}.{kind}"
    if not isinstance(body, list) or not body:
        v.type_err(p, "a non-empty list of conditions", body)
        return None
    items = [_rich_condition(v, x, f"{p}[{j}]") for j, x in enumerate(body)]
    if v.count > n:
        return None
    return C.Group(kind, [x for x in items if x is not None])


def _rich_action(v: _V, a: Any, path: str, source: str = "rule") -> A.Action | None:
    if not isinstance(a, dict):
        v.type_err(path, f"an object with one of {', '.join(ACTION_KINDS)}", a)
        return None
    kinds = [k for k in ACTION_KINDS if k in a]
    if len(kinds) != 1:
        others = [k for k in a if k != "continue_on_error"]
        if not kinds:
            v.err(path, f"unknown action kind {', '.join(map(show_value, others)) or '(empty object)'}: "
                        f"use one of {', '.join(ACTION_KINDS)}")
        else:
            v.err(path, f"has {' and '.join(kinds)}: one action per object (list them in order)")
        return None
    kind = kinds[0]
    n = v.count
    coe = v.bool_(a, "continue_on_error", path, False)
    extra = {"timeout_seconds"} if kind == "shell" else set()
    v.unknown(a, {kind, "continue_on_error", *extra}, path, f"a {kind} action")
    body = a[kind]
    p = f"{path}.{kind}"
    if kind == "shell":
        if not isinstance(body, str) or not body.strip():
            v.type_err(p, "a command string", body)
            return None
        timeout = v.num(a, "timeout_seconds", path, DEFAULT_SHELL_TIMEOUT * 10, lo=0, hi=7 * 86_400, strict_lo=True)
        return None if v.count > n else A.ShellAction(body, float(timeout), coe)
    if kind == "doctor":
        if body not in (None, True) and not isinstance(body, dict):
            v.type_err(p, "an object ({})", body)
        return None if v.count > n else A.DoctorAction(coe)
    if not isinstance(body, dict):
        v.type_err(p, "an object", body)
        return None
    if kind == "agent":
        v.unknown(body, {"prompt", "agent", "priority", "timeout_seconds"}, p, "an agent action")
        prompt = v.str_(body, "prompt", p, required=True)
        agent = v.str_(body, "agent", p)
        prio = _priority(v, body, p)
        t = v.num(body, "timeout_seconds", p, 0, lo=0, hi=7 * 86_400, strict_lo=True) if "timeout_seconds" in body \
            else None
        if v.count > n or prompt is None:
            return None
        return A.AgentAction(prompt, agent, prio, float(t) if t else None, source, coe)
    if kind == "notify":
        v.unknown(body, {"message", "channel"}, p, "a notify action")
        msg = v.str_(body, "message", p, required=True)
        ch = v.str_(body, "channel", p)
        return None if v.count > n or msg is None else A.NotifyAction(msg, ch, coe)
    if kind == "emit":
        v.unknown(body, {"type", "data"}, p, "an emit action")
        typ = v.str_(body, "type", p, required=True)
        if typ is not None and (any(c in typ for c in "*?[ ") or typ.startswith("automation.")):
            v.err(f"{p}.type", f"{show_value(typ)} must be a concrete event type (no wildcards, not automation.*)")
        data = body.get("data", {})
        if not isinstance(data, dict):
            v.type_err(f"{p}.data", "an object", data)
        return None if v.count > n or typ is None else A.EmitAction(typ, data, coe)
    if kind == "approve":
        v.unknown(body, {"message", "timeout_minutes", "on_timeout", "approvers"}, p, "an approve action")
        msg = v.str_(body, "message", p)
        minutes = v.num(body, "timeout_minutes", p, DEFAULT_APPROVAL_MINUTES, lo=0, hi=30 * 24 * 60, strict_lo=True)
        on_timeout = body.get("on_timeout", "reject")
        v.one_of(on_timeout, ON_TIMEOUT, f"{p}.on_timeout")
        approvers = body.get("approvers", [])
        if not isinstance(approvers, list) or not all(isinstance(x, str) and x.strip() for x in approvers):
            v.type_err(f"{p}.approvers", 'a list of names (like ["cli", "telegram:12345"])', approvers)
        if coe:
            v.err(f"{path}.continue_on_error", "does not apply to an approve action (a rejection ends the run)")
        if v.count > n:
            return None
        return A.ApproveAction(msg, float(minutes) * 60, on_timeout, list(approvers))
    v.unknown(body, {"url", "url_env", "message"}, p, "a webhook action")
    url_env = v.str_(body, "url_env", p)
    if url_env is not None:
        if "url" in body:
            v.err(p, "takes url or url_env, not both")
        if not ENV_NAME.match(url_env):
            v.err(f"{p}.url_env", f"{show_value(url_env)} must be the name of an environment variable")
        return None if v.count > n else A.WebhookAction(None, v.str_(body, "message", p), coe, url_env=url_env)
    url = v.str_(body, "url", p, required=True)
    if url is not None and not url.startswith(("http://", "https://")):
        v.err(f"{p}.url", f"{show_value(url)} must be an http:// or https:// URL")
    return None if v.count > n or url is None else A.WebhookAction(url, v.str_(body, "message", p), coe)


def _list(v: _V, raw: dict[str, Any], key: str, required: bool) -> list[Any]:
    val = raw.get(key, MISSING)
    if val is MISSING or val is None:
        if required:
            v.err(key, "is required (a non-empty list)")
        return []
    if not isinstance(val, list):
        v.type_err(key, "a list", val)
        return []
    if required and not val:
        v.err(key, "must not be empty")
    if len(val) > MAX_PER_RULE:
        v.err(key, f"has {len(val)} entries: at most {MAX_PER_RULE}")
        return []
    return val


def _rich_rule(v: _V, raw: dict[str, Any], rid: str, project: str) -> Rule | None:
    n = v.count
    v.unknown(raw, RICH_KEYS, "", "a rule")
    triggers = [_rich_trigger(v, t, f"triggers[{i}]") for i, t in enumerate(_list(v, raw, "triggers", True))]
    conds = [_rich_condition(v, c, f"conditions[{i}]") for i, c in enumerate(_list(v, raw, "conditions", False))]
    acts = [_rich_action(v, a, f"actions[{i}]") for i, a in enumerate(_list(v, raw, "actions", True))]
    mode = raw.get("mode", "single")
    v.one_of(mode, MODES, "mode")
    mx = v.num(raw, "max", "", DEFAULT_MAX, lo=1, hi=MAX_PARALLEL, integer=True)
    if "max" in raw and mode in ("single", "restart"):
        v.err("max", f"only applies to mode queued or parallel, not {show_value(mode)}")
    cooldown = v.num(raw, "cooldown_seconds", "", 0, lo=0, hi=30 * 86_400)
    mrpm = v.num(raw, "max_runs_per_minute", "", DEFAULT_MAX_RUNS_PER_MINUTE, lo=1, hi=MAX_RUNS_PER_MINUTE,
                 integer=True)
    own = v.bool_(raw, "ignore_own_events", "", True)
    enabled = v.bool_(raw, "enabled", "", True)
    approval = v.bool_(raw, "requires_approval", "", False)
    desc = v.str_(raw, "description", "") or ""
    env = _env_names(v, raw)
    if v.count > n:
        return None
    return Rule(rid, project, "rich", desc, enabled, [t for t in triggers if t], [c for c in conds if c],
                [a for a in acts if a], mode, int(mx), float(cooldown), int(mrpm), own, approval, env=env)


def _env_names(v: _V, raw: dict[str, Any]) -> tuple[str, ...]:
    """``env``: names of the service's environment variables the rule's shell commands may see."""
    names = raw.get("env", [])
    if not isinstance(names, list):
        v.type_err("env", "a list of environment variable names", names)
        return ()
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not ENV_NAME.match(name):
            v.err(f"env[{i}]", f"{show_value(name)} must be the name of an environment variable")
        else:
            out.append(name)
    return tuple(out)


# -- schedule.jobs shorthand --------------------------------------------------------------------------------


def job_rule(v: _V, job: CronJob, project: str) -> Rule | None:
    """``{id, cron, action, prompt?, agent?}`` -> rule ``schedule:<id>`` on ``cron.fired`` with ``job_id == id``.

    ``doctor`` runs the doctor; ``agent`` (or any job with a ``prompt``) queues an agent task; ``shell:CMD`` runs
    CMD; any other action text containing a space is taken as the agent prompt itself; a single unknown word
    (the AIWG daemon had names like ``artifact-audit`` it never ran) becomes a notify saying it has no handler,
    rather than a surprise agent run.
    """
    action = job.action.strip()
    act: A.Action | None
    if action == "doctor" and job.prompt is None:
        act = A.DoctorAction()
    elif action == "agent" or job.prompt is not None:
        if not job.prompt:
            v.err("prompt", f"is required when action is {show_value(action)}")
            return None
        act = A.AgentAction(job.prompt, job.agent, 0, None, "cron")
    elif action.startswith("shell:"):
        cmd = action[len("shell:"):].strip()
        if not cmd:
            v.err("action", "\"shell:\" needs a command after the colon, like \"shell:make lint\"")
            return None
        act = A.ShellAction(cmd, DEFAULT_SHELL_TIMEOUT * 10)
    elif any(c.isspace() for c in action):
        act = A.AgentAction(action, job.agent, 0, None, "cron")
    else:
        act = A.NotifyAction(f"scheduled job {job.id}: action {action!r} has no handler "
                             f"(use doctor, agent with a prompt, or shell:CMD)", None)
    trig = Trigger("cron.fired", True, "cron.fired".__eq__, f"cron {job.cron}", job_id=job.id)
    return Rule(SCHEDULE_PREFIX + job.id, project, "schedule", f"schedule.jobs {job.id}: {action}", job.enabled,
                [trig], [], [act], "single", DEFAULT_MAX, 0.0, DEFAULT_MAX_RUNS_PER_MINUTE, True, False, job.cron,
                job.tz)


# -- entry points -------------------------------------------------------------------------------------------


def compile_rules(raw_rules: list[Any], jobs: list[CronJob], project: str = "") -> tuple[list[Rule],
                                                                                       list[tuple[str, str]]]:
    """Validate and compile; returns the good rules and every problem (a bad rule is left out, never half-run)."""
    errors: list[tuple[str, str]] = []
    out: list[Rule] = []
    seen: dict[str, int] = {}
    if len(raw_rules) + len(jobs) > MAX_RULES:
        errors.append(("rules", f"{len(raw_rules)} rules and {len(jobs)} schedule jobs: at most {MAX_RULES} "
                                f"together per project"))
        return out, errors
    if len(jobs) > MAX_JOBS:
        errors.append(("schedule.jobs", f"{len(jobs)} jobs: at most {MAX_JOBS} per project"))
        return out, errors
    for i, raw in enumerate(raw_rules):
        rid = raw.get("id") if isinstance(raw, dict) else None
        base = f"rules[{i}]" + (f" ({rid})" if isinstance(rid, str) and rid else "")
        v = _V(errors, base)
        if not isinstance(raw, dict):
            v.type_err("", "an object", raw)
            continue
        if not isinstance(rid, str) or not rid.strip():
            v.err("id", "is required (a non-empty string)" if rid is None else f"must be a non-empty string, "
                                                                              f"not {show_value(rid)}")
            continue
        if rid.startswith(SCHEDULE_PREFIX):
            v.err("id", f"{show_value(rid)}: ids starting with \"schedule:\" are reserved for schedule.jobs")
            continue
        if rid in seen:
            v.err("id", f"duplicate rule id {show_value(rid)} (also rules[{seen[rid]}])")
            continue
        seen[rid] = i
        aiwg = "trigger" in raw or "action" in raw
        rich = "triggers" in raw or "actions" in raw
        if aiwg and rich:
            v.err("", "mixes the AIWG form (trigger/action) and the richer form (triggers/actions): use one")
            continue
        if not aiwg and not rich:
            v.err("", "needs triggers and actions (or the AIWG form's trigger and action)")
            continue
        rule = _aiwg_rule(v, raw, rid, project) if aiwg else _rich_rule(v, raw, rid, project)
        if rule is not None:
            out.append(rule)
    for i, job in enumerate(jobs):
        v = _V(errors, f"schedule.jobs[{i}] ({job.id})")
        r = job_rule(v, job, project)
        if r is not None:
            out.append(r)
    return out, errors


def check_config(cfg: Any) -> list[tuple[str, str]]:
    """Every rule problem (rules and the schedule.jobs shorthand), each naming the rule and the field."""
    return compile_rules(cfg.rules, cfg.schedule.jobs)[1]


def rules_for(cfg: Any, project: str) -> tuple[list[Rule], list[tuple[str, str]]]:
    jobs = cfg.schedule.jobs if cfg.schedule.enabled else []
    return compile_rules(cfg.rules, jobs, project)
