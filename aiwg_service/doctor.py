"""The built-in health check (the ``doctor`` action and the default ``health-check`` cron job).

It looks only at what the service already knows (config, socket, watcher health, disk, PATH), so it is
cheap enough to run from a rule and never needs a network.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Service

MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_FREE_FRACTION = 0.02


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def run(service: Service, project: str | None) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    last = service.last_reload
    checks.append(_check("config", bool(last.get("ok", True)),
                         "valid" if last.get("ok", True) else "; ".join(last.get("errors", [])[:3])))
    serving = service.rpc.server is not None and service.rpc.server.is_serving()
    checks.append(_check("socket", serving, str(service.socket_path) if serving else "not serving"))
    watcher = service.health().get("watcher", {})
    if project is not None and project in watcher.get("roots", {}):
        root = watcher["roots"][project]
        ok = not root.get("unwatched_dirs") and not root.get("last_error")
        checks.append(_check("watcher", ok, root.get("last_error") or f"{root.get('watched_dirs', 0)} dirs watched"))
    else:
        checks.append(_check("watcher", bool(watcher.get("running", True)), "running"))
    try:
        du = shutil.disk_usage(service.state_dir)
        ok = du.free >= MIN_FREE_BYTES and du.free >= du.total * MIN_FREE_FRACTION
        checks.append(_check("disk", ok, f"{du.free / 2**30:.1f} GiB free in {service.state_dir}"))
    except OSError as exc:
        checks.append(_check("disk", False, f"cannot stat {service.state_dir}: {exc.strerror}"))
    claude = shutil.which("claude")
    checks.append(_check("agent", claude is not None, claude or "`claude` is not on PATH (agent tasks will fail)"))
    return {"ok": all(c["ok"] for c in checks), "project": project, "checks": checks}
