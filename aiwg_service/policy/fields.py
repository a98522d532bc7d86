"""Which config fields a repository may set on its own: an allow-list, so a field nobody declared needs trust.

A project's ``.aiwg/daemon.json`` comes with the repository. Each field of the schema is one of:

- ``INERT``: changes nothing the owner would mind (what to watch and ignore, debounce, log level, names,
  descriptions, the timing of jobs that only emit events); set freely.
- ``LOWER``: a service-wide limit or budget; a project may lower it, never raise it (a higher value is
  clamped to the service file's, trusted or not).
- ``JUDGED``: a list whose entries are judged one by one (``rules``, ``schedule.jobs``): a rule that only
  notifies or emits is inert, one with a shell, agent or webhook needs trust (``trust.needs`` says which).
- anything else needs trust: runs a process, sends data, changes what agents run with, listens, spends.

This module walks raw JSON only (it imports neither ``config`` nor any subsystem): ``trust.needs`` asks it
what a file sets that needs trust, and ``restrict`` gives the document an untrusted project is served with.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

INERT = "inert"
LOWER = "lower"
JUDGED = "judged"
GATED = "gated"

#: The allow-list. A path is dot-separated; ``*`` matches any key of a dict section, ``[]`` any list item.
#: A declared path covers everything under it. Whatever is not here needs trust.
DECLARED: dict[str, str] = {
    "daemon.heartbeat_interval_seconds": INERT,
    "daemon.log": INERT,
    "daemon.max_parallel_actions": LOWER,
    "daemon.action_timeout_minutes": LOWER,
    "daemon.max_rule_processes": LOWER,
    "watch": INERT,
    "schedule.enabled": INERT,
    "schedule.jobs": JUDGED,
    "rules": JUDGED,
    "automation.max_chain_depth": LOWER,
    "budgets.project_daily_usd": LOWER,
    "budgets.rule_daily_usd": LOWER,
    "budgets.service_daily_usd": LOWER,
    "budgets.service_monthly_usd": LOWER,
    "budgets.warn_at": INERT,
    "budgets.tz": INERT,
    # a project's sandbox for a profile is intersected with the owner's (``sandbox.narrow``): it can only take away
    "agents.*.sandbox": INERT,
}


def _norm(parts: tuple[str, ...]) -> str:
    return ".".join(parts)


def classify(path: str) -> str:
    """The class of a field (``watch.paths[].ignore``, ``agents.claude.model``): its longest declared prefix's,
    else ``GATED``. ``[]`` and dict keys match ``*`` in declarations."""
    parts = path.replace("[]", "").split(".")
    for n in range(len(parts), 0, -1):
        head = parts[:n]
        for cand in (_norm(tuple(head)), _norm(tuple([*head[:1], "*", *head[2:]])) if n > 1 else None):
            if cand is not None and cand in DECLARED:
                return DECLARED[cand]
    return GATED


def leaves(raw: Any, prefix: str = "") -> Iterator[tuple[str, Any, list[Any]]]:
    """``(path, value, parent-chain)`` of every field a document sets, stopping at declared paths (their
    whole value is judged at once) and at scalars and lists (a list is one value)."""
    if not isinstance(raw, dict):
        return
    for k, v in raw.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if path in DECLARED or isinstance(v, list) or not isinstance(v, dict) or not v:
            yield path, v, [raw, k]
        else:
            yield from leaves(v, path)


def short(value: Any) -> str:
    """A value in full, on one line, with control characters escaped (a trust prompt must not hide text)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if not text.isprintable():
        text = json.dumps(text, ensure_ascii=True)
    return text


def gated(raw: Any) -> list[str]:
    """``path: sets value`` for each field of ``raw`` that needs trust (JUDGED lists are not included)."""
    out: list[str] = []
    for path, value, _where in leaves(raw):
        if classify(path) == GATED:
            out.append(f"{path}: sets {short(value)}")
    return out


def _lookup(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.split("."):
        cur = getattr(cur, part, None) if not isinstance(cur, dict) else cur.get(part)
        if cur is None:
            return None
    return cur


def _open_below(path: str) -> bool:
    """Is anything under ``path`` declared (so it cannot be dropped whole)?"""
    gen = ".".join("*" if i == 1 else p for i, p in enumerate(path.split(".")))
    return any(d.startswith(path + ".") or d.startswith(gen + ".") for d in DECLARED)


def _drop_gated(doc: dict[str, Any], prefix: str) -> None:
    """Remove what needs trust, at the highest level that has nothing declared below it (so a dict entry goes
    whole, never leaving a half entry behind that fails validation)."""
    for k in list(doc):
        path = f"{prefix}.{k}" if prefix else str(k)
        cls = classify(path)
        if cls != GATED:
            continue
        v = doc[k]
        if isinstance(v, dict) and v and _open_below(path):
            _drop_gated(v, path)
        else:
            del doc[k]


def restrict(raw: Any, trusted: bool, service: Any, warn: Callable[[str], None] | None = None) -> Any:
    """The document a project is served with: ``raw`` with every field that needs trust removed (unless
    ``trusted``), and each ``LOWER`` limit clamped to the service file's value (``service``: the service's
    assembled config, or a dict). JUDGED lists stay: their owners hold the entries that need trust, with a
    trace. Returns a copy; ``raw`` is not changed."""
    if not isinstance(raw, dict):
        return raw
    out = copy.deepcopy(raw)
    if not trusted:
        _drop_gated(out, "")
    for path, value, (parent, key) in list(leaves(out)):
        if classify(path) != LOWER:
            continue
        cap = _lookup(service, path)
        if cap is None:  # no service-wide limit: any value lowers it
            continue
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value > cap):
            parent[key] = cap
            if warn is not None:
                warn(f"{path}: {short(value)} is above the service-wide {short(cap)}; "
                     f"a project may lower it, never raise it (using {short(cap)})")
    return out
