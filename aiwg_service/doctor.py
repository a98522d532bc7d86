"""The built-in health check (the ``doctor`` action and the default ``health-check`` cron job).

It looks only at what the service already knows (config, socket, watcher health, disk, PATH), so it is
cheap enough to run from a rule and never needs a network.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_FREE_FRACTION = 0.02


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


@dataclass(frozen=True)
class Facts:
    """What the doctor may look at: read-only views lent by the core."""

    config_status: Callable[[], dict[str, Any]]
    serving: Callable[[], bool]
    socket_path: Callable[[], Path]
    health: Callable[[], dict[str, Any]]
    state_dir: Path
    #: profile -> the executable its tasks run (None: not found), for ``project`` (None: the service's).
    agents: Callable[[str | None], dict[str, str | None]] | None = None
    #: agent profile -> the sandbox mechanism its tasks get ("systemd", "bubblewrap", "off", "refused: why")
    sandbox: Callable[[], dict[str, str]] | None = None


def run(facts: Facts, project: str | None) -> dict[str, Any]:
    checks: list[dict[str, Any]] = []
    last = facts.config_status()
    checks.append(_check("config", bool(last.get("ok", True)),
                         "valid" if last.get("ok", True) else "; ".join(last.get("errors", [])[:3])))
    serving = facts.serving()
    checks.append(_check("socket", serving, str(facts.socket_path()) if serving else "not serving"))
    watcher = facts.health().get("watcher", {})
    if project is not None and project in watcher.get("roots", {}):
        root = watcher["roots"][project]
        ok = not root.get("unwatched_dirs") and not root.get("last_error")
        checks.append(_check("watcher", ok, root.get("last_error") or f"{root.get('watched_dirs', 0)} dirs watched"))
    else:
        checks.append(_check("watcher", bool(watcher.get("running", True)), "running"))
    try:
        du = shutil.disk_usage(facts.state_dir)
        ok = du.free >= MIN_FREE_BYTES and du.free >= du.total * MIN_FREE_FRACTION
        checks.append(_check("disk", ok, f"{du.free / 2**30:.1f} GiB free in {facts.state_dir}"))
    except OSError as exc:
        checks.append(_check("disk", False, f"cannot stat {facts.state_dir}: {exc.strerror}"))
    agents = facts.agents(project) if facts.agents is not None else {"claude": shutil.which("claude")}
    for name, exe in agents.items():
        where = " or in ~/.local/bin, ~/.claude/local" if name == "claude" else ""
        # "agent": the default profile's row keeps its old name (rules and scripts read it)
        checks.append(_check("agent" if name == "claude" else f"agent {name}", exe is not None,
                             exe or f"its command is not on PATH{where} (its tasks will fail)"))
    if facts.sandbox is not None:
        for name, mech in sorted(facts.sandbox().items()):
            checks.append(_check(f"sandbox {name}", not mech.startswith("refused"), mech if mech != "off" else
                                 "off: this profile's agents run unconfined (sandbox: \"off\")"))
    return {"ok": all(c["ok"] for c in checks), "project": project, "checks": checks}
