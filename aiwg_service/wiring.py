"""The fixed start order of the subsystems, and what each is built from.

Start order: event router, task store, agent supervisor, automation engine, IPC server, file watcher,
cron scheduler, messaging. Stop runs in reverse, so sources go quiet before the engines they feed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Service


def _no_task_queue(*_args: Any) -> str:
    raise RuntimeError("task queue not available yet")


def _minimal_doctor(project: str) -> dict[str, Any]:
    from pathlib import Path

    ok = Path(project).is_dir()
    return {"ok": ok, "checks": [{"name": "project directory", "ok": ok, "detail": project}]}


def build_subsystems(service: Service) -> list[Any]:
    from .rules.engine import AutomationEngine
    from .service import IpcSubsystem, Placeholder

    # until the task supervisor lands, agent actions fail with a clear reason and the doctor is minimal
    automation = AutomationEngine(service.bus, service.state_dir, submit_task=_no_task_queue, doctor=_minimal_doctor)
    automation.register_rpc(service.rpc)
    return [
        service.bus,
        Placeholder("store"),
        Placeholder("supervisor"),
        automation,
        IpcSubsystem(service),
        Placeholder("watcher"),
        Placeholder("scheduler"),
        Placeholder("messaging"),
    ]
