"""The fixed start order of the subsystems, and what each is built from.

Start order: event router, task store, agent supervisor, automation engine, IPC server, file watcher,
cron scheduler, messaging. Stop runs in reverse, so sources go quiet before the engines they feed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Service


def build_subsystems(service: Service) -> list[Any]:
    from .service import IpcSubsystem, Placeholder

    return [
        service.bus,
        Placeholder("store"),
        Placeholder("supervisor"),
        Placeholder("automation"),
        IpcSubsystem(service),
        Placeholder("watcher"),
        Placeholder("scheduler"),
        Placeholder("messaging"),
    ]
