"""What each page shows, read through the service's own RPC methods (``LocalRpc``), as plain dicts.

The templates only lay these out; nothing here knows HTML.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import protocol as p
from .local import LocalRpc
from .loglines import Lines

#: how much of a log a page shows at first (the rest streams in, or is one click away in `aiwgctl task logs`)
TAIL = 16 * 1024
COST_DAYS = 30

FinishedSince = Callable[[str], list[tuple[str, str, float | None, float | None, str]]]


async def log_tail(rpc: LocalRpc, task_id: str, tail: int = TAIL, raw: bool = False) -> dict[str, Any]:
    """The last ``tail`` bytes of a task's log, from a line's start, and the offset the page has after them:
    ``raw``, the bytes as written; else complete lines made readable (a line still being written streams in)."""
    head = await rpc.call("task.logs", {"taskId": task_id, "offset": 0, "limit": 1})
    start = max(0, int(head.get("size", 0)) - tail)
    res = await rpc.call("task.logs", {"taskId": task_id, "offset": start, "limit": tail})
    text, end, eof = res["data"], int(res["offset"]), bool(res.get("eof", False))
    if start > 0 and "\n" in text:
        text = text[text.index("\n") + 1:]
    if raw:
        return {"text": text, "offset": end, "cut": start > 0, "eof": eof}
    lines = Lines(end - len(text.encode()))
    shown = lines.feed(text, end) + (lines.flush(end) if eof else [])
    return {"text": "".join(f"{s}\n" for _, s in shown), "offset": lines.pos, "cut": start > 0, "eof": eof}


def short(project: str | None) -> str:
    """A project's name for people: its last path component (the title attribute keeps the whole path)."""
    if not project:
        return "-"
    return project.rstrip("/").rsplit("/", 1)[-1] or project


async def now(rpc: LocalRpc) -> dict[str, Any]:
    running = await rpc.call("task.list", {"state": "running", "limit": 50})
    queued = await rpc.call("task.list", {"state": "queued", "limit": 50})
    held = []
    for h in (await rpc.call("budget.status")).get("held", [])[:50]:
        t = await rpc.call("task.get", {"taskId": h["taskId"]})
        held.append({**t, "held_reason": h.get("reason")})
    for t in running:
        t["log"] = await log_tail(rpc, t["id"], 4096)
    status = await rpc.call("daemon.status")
    roots = status.get("subsystems", {}).get("watcher", {}).get("roots", {})
    projects = []
    for pr in status.get("projects", []):
        w = roots.get(pr["path"], {})
        problems = list(pr.get("warnings", []))
        if w.get("last_error"):
            problems.append(str(w["last_error"]))
        projects.append({**pr, "name": short(pr["path"]), "watched_dirs": w.get("watched_dirs", 0),
                         "overflows": w.get("overflows", 0), "rescans": w.get("rescans", 0),
                         "health": "ok" if not problems and pr.get("trusted", True) else "attention",
                         "problems": problems})
    stats = await rpc.call("task.stats")
    approvals = await rpc.call("approval.list", {"state": "pending", "limit": 10})
    return {"running": running, "queued": queued, "held": held, "projects": projects,
            "status_line": status.get("status", ""), "stats": stats, "pending": len(approvals["approvals"])}


async def task(rpc: LocalRpc, task_id: str, raw: bool = False) -> dict[str, Any]:
    t = await rpc.call("task.get", {"taskId": task_id})
    t = t.get("task", t) if isinstance(t, dict) else t
    return {"task": t, "log": await log_tail(rpc, t["id"], 64 * 1024, raw), "raw": raw,
            "origin_json": json.dumps(t.get("origin") or {}, indent=1, sort_keys=True)}


async def trace(rpc: LocalRpc, ident: str) -> dict[str, Any]:
    try:
        res = await rpc.call("trace.get", {"id": ident})
    except p.RpcError as exc:
        return {"id": ident, "error": exc.message, "root": None}
    return {"id": ident, "error": None, "root": res["root"], "total_cost_usd": res.get("total_cost_usd")}


async def approvals(rpc: LocalRpc) -> dict[str, Any]:
    pending = (await rpc.call("approval.list", {"state": "pending", "limit": 100}))["approvals"]
    recent = (await rpc.call("approval.list", {"state": "all", "limit": 20}))["approvals"]
    for a in pending:
        a["actions_json"] = [json.dumps(x, indent=1, sort_keys=True) for x in a.get("actions", [])]
        a["event_json"] = json.dumps(a.get("event", {}).get("data"), indent=1, sort_keys=True)
    return {"pending": pending, "recent": [a for a in recent if a["state"] != "pending"]}


async def costs(rpc: LocalRpc, finished_since: FinishedSince) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=i)).isoformat() for i in range(COST_DAYS - 1, -1, -1)]
    rows = finished_since(days[0])
    per_day: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    per_project: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for project, _state, _dur, cost, finished in rows:
        if cost is None:
            continue
        per_day[finished[:10]][project] += cost
        per_project[project] += cost
        counts[project] += 1
    budgets = await rpc.call("budget.status")
    day = budgets.get("day")
    lines = [(f"{b['budget']} {short(b['key']) if b.get('key') not in (None, '', '*') else ''}".strip(),
              float(b["limit_usd"]))
             for b in budgets.get("budgets", []) if b.get("period") == day]
    projects = sorted(per_project, key=lambda k: -per_project[k])
    table = [{"project": pr, "name": short(pr), "usd": per_project[pr], "tasks": counts[pr]} for pr in projects]
    daily = [{"day": d, "usd": sum(per_day.get(d, {}).values())} for d in reversed(days)
             if sum(per_day.get(d, {}).values()) > 0]
    return {"days": days, "series": {d: dict(v) for d, v in per_day.items()}, "lines": lines,
            "projects": projects, "table": table, "daily": daily, "budgets": budgets.get("budgets", []),
            "held": budgets.get("held", []), "total": sum(per_project.values()), "day": day,
            "month": budgets.get("month")}


async def events(rpc: LocalRpc, type_: str | None, project: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": 200}
    if type_:
        params["type"] = type_
    if project:
        params["project"] = project
    try:
        res = await rpc.call("events.list", params)
        error = None
    except p.RpcError as exc:
        res, error = {"events": []}, exc.message
    evs = res["events"][-200:]
    for e in evs:
        e["data_json"] = json.dumps(e.get("data"), separators=(",", ":"))[:2000]  # as the page's script shows it
    status = await rpc.call("project.list")
    return {"events": list(reversed(evs)), "type": type_ or "", "project": project or "", "error": error,
            "projects": [pr["path"] for pr in status["projects"]]}
