"""The AIWG daemon's status shapes, derived from our subsystems' health.

The AIWG daemon's own CLI (``index.mjs status``) prints fields by name from ``daemon.status``, and reads
``.aiwg/daemon/state.json``-style fields when the socket is gone (see the client contract). Those fields
are computed here from the health each subsystem already reports, so they are true values, and they sit
beside ours: nothing of our own shape is renamed or removed. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

HEALTHY = "healthy"
DEGRADED = "degraded"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def issues(health: dict[str, dict[str, Any]], last_reload: dict[str, Any],
           failures: list[dict[str, Any]] | None = None) -> list[str]:
    """What is wrong now, one readable line each; empty when all is well."""
    out: list[str] = [f"project {f['path']} failed: {f.get('reason')}" for f in failures or ()]
    if not last_reload.get("ok", True):
        out.append(f"the last reload was refused (invalid config, {len(last_reload.get('errors', []))} "
                   "error(s)); the old config keeps running")
    for name, h in health.items():
        if "error" in h:
            out.append(f"{name}: health check failed: {h['error']}")
        elif h.get("state") == "not started":
            out.append(f"{name}: not started")
    watcher = health.get("watcher", {})
    if watcher and watcher.get("running") is False:
        out.append("file watcher: not running")
    for root, r in (watcher.get("roots") or {}).items():
        if r.get("last_error"):
            out.append(f"file watcher: {root}: {r['last_error']}")
    for name, b in (health.get("messaging", {}).get("bridges") or {}).items():
        if not isinstance(b, dict) or not b.get("enabled"):
            continue
        waiting = (b.get("outbox") or {}).get("queued") or 0
        held = f"; {waiting} message(s) wait in its outbox" if waiting else ""
        if b.get("state") in ("error", "stopped"):
            out.append(f"messaging: the {name} bridge stopped: {b.get('detail') or b.get('last_error')}{held}")
        elif b.get("state") == "connecting" and waiting:
            out.append(f"messaging: the {name} bridge is reconnecting ({b.get('detail')}){held}")
    for name in ("router", "automation"):
        if _int(health.get(name, {}).get("config_errors")):
            out.append(f"{name}: {health[name]['config_errors']} config error(s)")
    return out


def scoped(subsystems: dict[str, dict[str, Any]], root: str,
           per_project: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The subsystems' health as one project sees it: each subsystem's own counts for ``root`` over its totals,
    and the file watcher's roots cut to ``root``."""
    out = {name: {**h, **per_project.get(name, {})} for name, h in subsystems.items()}
    watcher = out.get("watcher")
    if watcher and isinstance(watcher.get("roots"), dict):
        watcher["roots"] = {r: v for r, v in watcher["roots"].items() if r == root}
    return out


def _watcher(health: dict[str, dict[str, Any]]) -> dict[str, Any]:
    w = health.get("watcher", {})
    roots = (w.get("roots") or {}).values()
    received = sum(sum(_int(v) for v in (r.get("events") or {}).values()) for r in roots)
    return {"enabled": bool(w.get("running")) and any(r.get("enabled") for r in roots),
            "events_received": received}


def _scheduler(health: dict[str, dict[str, Any]]) -> dict[str, Any]:
    jobs = _int(health.get("scheduler", {}).get("jobs"))
    return {"enabled": jobs > 0, "jobs": jobs}


def status(subsystems: dict[str, dict[str, Any]], connections: int, problems: list[str]) -> dict[str, Any]:
    """The fields ``daemon.status`` adds for the AIWG CLI: ``health`` and ``issues`` at the top, and
    per subsystem ``ipc.clients``, ``supervisor.maxConcurrency``, ``automation.enabled/ruleCount``,
    ``file_watcher``, ``scheduler.enabled/jobs``, ``messaging.enabled/adapters``. A subsystem that sets
    one of them itself keeps its own value."""
    subs = {name: dict(h) for name, h in subsystems.items()}
    subs.setdefault("ipc", {}).setdefault("clients", connections)
    sup = subs.setdefault("supervisor", {})
    sup.setdefault("maxConcurrency", sup.get("max_parallel"))
    auto = subs.setdefault("automation", {})
    auto.setdefault("enabled", "rules" in auto)
    auto.setdefault("ruleCount", _int(auto.get("rules")))
    subs["file_watcher"] = {**_watcher(subsystems), **subs.get("file_watcher", {})}
    sched = subs.setdefault("scheduler", {})
    for k, v in _scheduler(subsystems).items():
        sched.setdefault(k, v)
    msg = subs.setdefault("messaging", {})
    msg.setdefault("enabled", False)
    msg.setdefault("adapters", 0)
    return {"health": DEGRADED if problems else HEALTHY, "issues": problems, "subsystems": subs}


def state_file(subsystems: dict[str, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The fields ``state.json`` adds for the AIWG CLI's fallback (no socket)."""
    sup = subsystems.get("supervisor", {})
    return {
        "health": {"status": DEGRADED if problems else HEALTHY, "issues": problems},
        "agents": {"running": _int(sup.get("running")), "queued": _int(sup.get("queued")),
                   "maxConcurrency": sup.get("max_parallel")},
        "monitors": {"file_watcher": _watcher(subsystems), "scheduler": _scheduler(subsystems)},
    }
