"""Fast matching: path globs compiled once, dotted event fields, templates, and the trigger index.

The index is what makes 1,000 rules cheap: exact event types are a dict lookup, wildcard type patterns a short
list, and triggers with path globs are filed under the glob's literal directory prefix, so an event only tests the
globs that could possibly match its path instead of every glob of every rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..events.bus import compile_pattern
from ..globs import Matcher, compile_rule
from ..protocol import Event

if TYPE_CHECKING:
    from .schema import Rule, Trigger


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
_TOP = {"type", "source", "project", "id", "time"}


# -- globs -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Glob:
    """One compiled glob. Without a ``/`` it matches the file name at any depth (like .gitignore)."""

    text: str
    prefix: str  # the literal directory prefix ("src/"), "" if none; used by the index
    basename: bool
    rx: Matcher  # linear in the path whatever the glob (see globs)

    def matches(self, path: str) -> bool:
        if self.basename:
            return self.rx.fullmatch(path.rpartition("/")[2])
        return self.rx.fullmatch(path)


def compile_glob(text: str) -> Glob:
    pat = text[2:] if text.startswith("./") else text
    basename = "/" not in pat
    if pat.endswith("/"):
        pat += "**"  # "src/" means everything under src
    rx = compile_rule(pat)
    prefix = ""
    if not basename:
        special = min((k for k in (pat.find(c) for c in "*?[{") if k >= 0), default=len(pat))
        prefix = pat[: pat.rfind("/", 0, special) + 1]
    return Glob(text, prefix, basename, rx)


def event_paths(event: Event, root: str | None) -> list[str]:
    """``data.path`` and ``data.paths`` (file.batch), relative to the project root, without ``./``."""
    d = event.data
    raw: list[Any] = []
    p = d.get("path")
    if isinstance(p, str):
        raw.append(p)
    ps = d.get("paths")
    if isinstance(ps, list):
        raw.extend(x for x in ps if isinstance(x, str))
    if not raw:
        return raw
    base = (root.rstrip("/") + "/") if root else None
    out = []
    for x in raw:
        if base is not None and x.startswith(base):
            x = x[len(base):]
        elif x.startswith("./"):
            x = x[2:]
        out.append(x)
    return out


def dir_prefixes(path: str) -> Iterable[str]:
    """"a/b/c.py" -> "", "a/", "a/b/": every key under which a glob that could match it is filed."""
    yield ""
    i = path.find("/")
    while i != -1:
        yield path[: i + 1]
        i = path.find("/", i + 1)


# -- fields and templates -------------------------------------------------------------------------------


def get_field(event: Event, dotted: str) -> Any:
    """``payload.x`` and ``data.x`` read the event's data (the AIWG daemon called it payload); ``type``,
    ``source``, ``project``, ``id``, ``time`` (or ``timestamp``) the envelope; any other head reads data too."""
    parts = dotted.split(".")
    head = parts[0]
    if head in ("payload", "data"):
        cur: Any = event.data
        parts = parts[1:]
    elif head in _TOP and len(parts) == 1:
        return getattr(event, head)
    elif head == "timestamp" and len(parts) == 1:
        return event.time
    else:
        cur = event.data
    for part in parts:
        if isinstance(cur, dict):
            cur = cur.get(part, MISSING)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return MISSING
        if cur is MISSING:
            return MISSING
    return cur


_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}|\{(path|paths|type|project|source|rule_id|run_id|id)\}")


def _text(v: Any) -> str:
    if v is MISSING or v is None:
        return ""
    if isinstance(v, str):
        return v
    import json

    return json.dumps(v, ensure_ascii=False)


def render(template: str, event: Event, paths: list[str], extra: dict[str, str] | None = None) -> str:
    """``{{payload.x}}`` / ``{{data.x}}`` (dotted) and ``{path}``, ``{paths}`` (space-joined), ``{type}``,
    ``{project}``, ``{source}``, ``{rule_id}``, ``{run_id}``. Missing values become empty; other braces stay."""
    if "{" not in template:
        return template

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return _text(get_field(event, m.group(1)))
        name = m.group(2)
        if name == "path":
            return paths[0] if paths else _text(event.data.get("path"))
        if name == "paths":
            return " ".join(paths)
        if extra and name in extra:
            return extra[name]
        if name == "rule_id" or name == "run_id":
            return ""
        return _text(getattr(event, name))

    return _TEMPLATE.sub(sub, template)


# -- the trigger index ----------------------------------------------------------------------------------

Entry = tuple["Rule", "Trigger"]


@dataclass(slots=True)
class _Bucket:
    plain: list[Entry] = field(default_factory=list)
    by_prefix: dict[str, list[Entry]] = field(default_factory=dict)
    #: triggers with a string ``data`` equality (``{"event": "push"}``), filed by field and value, so 300 rules
    #: on ``webhook.github`` that each want another event cost one dict lookup, not 300 field reads
    by_value: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)

    def add(self, rule: Rule, trig: Trigger) -> None:
        if not trig.globs:
            keyed = next(((k, v) for k, v in trig.data.items() if isinstance(v, str)), None)
            if keyed is None:
                self.plain.append((rule, trig))
            else:
                k, v = keyed
                path = k if k.startswith(("data.", "payload.")) else "data." + k
                self.by_value.setdefault(path, {}).setdefault(v, []).append((rule, trig))
            return
        for prefix in {g.prefix for g in trig.globs}:
            self.by_prefix.setdefault(prefix, []).append((rule, trig))

    def collect(self, event: Event, paths: list[str], out: list[Entry]) -> None:
        out.extend(self.plain)
        for path, table in self.by_value.items():
            got = get_field(event, path)
            if isinstance(got, str):
                hit = table.get(got)
                if hit:
                    out.extend(hit)
            elif got is not MISSING:  # 3 == "3", true == "true": loose equality, so let each trigger decide
                for entries in table.values():
                    out.extend(entries)
        if self.by_prefix and paths:
            bp = self.by_prefix
            for p in paths:
                for pre in dir_prefixes(p):
                    got = bp.get(pre)
                    if got:
                        out.extend(got)


class TriggerIndex:
    """The rules of one project, filed by trigger type pattern (and path prefix) for fast candidate lookup."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.exact: dict[str, _Bucket] = {}
        wild: dict[str, _Bucket] = {}
        for rule in rules:
            for trig in rule.triggers:
                if trig.type_is_exact:
                    self.exact.setdefault(trig.type, _Bucket()).add(rule, trig)
                else:
                    wild.setdefault(trig.type, _Bucket()).add(rule, trig)
        self.wild: list[tuple[Callable[[str], bool], _Bucket]] = [(compile_pattern(p), b) for p, b in wild.items()]

    def match(self, event: Event, paths: list[str]) -> list[Entry]:
        """Every (rule, trigger) whose trigger fully matches; one entry per rule."""
        cands: list[Entry] = []
        b = self.exact.get(event.type)
        if b is not None:
            b.collect(event, paths, cands)
        for m, wb in self.wild:
            if m(event.type):
                wb.collect(event, paths, cands)
        if not cands:
            return cands
        out: list[Entry] = []
        seen: set[str] = set()
        for rule, trig in cands:
            if rule.id in seen:
                continue
            if trig.matches(event, paths):
                seen.add(rule.id)
                out.append((rule, trig))
        return out
