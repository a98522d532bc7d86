"""The fixed start order of the subsystems, and what each is built from.

Start order: event router, task store, agent supervisor, automation engine, IPC server, file watcher,
cron scheduler, messaging. Stop runs in reverse, so sources go quiet before the engines they feed.
Subsystems never import each other: this module hands each one the bus (and the store) it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import Configs, Service, Subsystem


class WatcherSubsystem:
    """The inotify engine, fed each project's ``watch`` section, publishing on the bus."""

    name = "watcher"

    def __init__(self, service: Service) -> None:
        from .events.watcher import FileWatcher

        bus = service.bus
        self.engine = FileWatcher(lambda type, root, data: bus.publish(type, root, data, "watch"))

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    def apply(self, configs: Configs) -> None:
        from .events.watcher import WatchSpec

        for root in list(self.engine._roots):
            if root not in configs.projects:
                self.engine.remove_root(root)
        for root, project in configs.projects.items():
            w = project.config.watch
            specs = [WatchSpec(s.path, tuple(s.events), tuple(s.extensions), tuple(s.ignore)) for s in w.paths]
            self.engine.set_root(root, specs, debounce_ms=w.debounce_ms, enabled=w.enabled)

    def health(self) -> dict[str, Any]:
        h = self.engine.health()
        roots = h.get("roots", {})
        h["watched_dirs"] = sum(r["watched_dirs"] for r in roots.values())
        h["unwatched_dirs"] = sum(r["unwatched_dirs"] for r in roots.values())
        return h


def build_subsystems(service: Service) -> list[Subsystem]:
    from . import doctor
    from .events.scheduler import CronScheduler
    from .rules.engine import AutomationEngine
    from .service import IpcSubsystem
    from .tasks import subsystems as tasks

    scheduler = CronScheduler(service.bus, service.state_dir)
    service.rpc.register("cron.list", lambda _p, _c: {"jobs": scheduler.list_jobs()})
    store, supervisor = tasks.build(service)  # also registers task.* and chat.send

    def submit_task(project: str, prompt: str, agent: str | None, priority: int, source: str,
                    timeout_s: float | None, origin: dict[str, Any]) -> str:
        """The automation engine's way into the task queue (it never imports the supervisor)."""
        if supervisor.supervisor is None:
            raise RuntimeError("the task queue is not running")
        try:
            task = supervisor.supervisor.submit(project, prompt, agent=agent or "claude", priority=priority,
                                                source=source, timeout_s=timeout_s)
        except KeyError:
            raise ValueError(f"unknown agent profile {agent!r}") from None
        return task.id

    automation = AutomationEngine(service.bus, service.state_dir, submit_task=submit_task,
                                  doctor=lambda project: doctor.run(service, project))
    automation.register_rpc(service.rpc)
    messaging = build_messaging(service, store, supervisor)
    return [
        service.bus,
        store,
        supervisor,
        automation,
        IpcSubsystem(service),
        WatcherSubsystem(service),
        scheduler,
        messaging,
    ]


def build_messaging(service: Service, store: Any, supervisor: Any) -> Subsystem:
    """The messaging hub, given narrow ports onto the service: status, tasks, cancel (and later ask/decide)."""
    from .messaging.hub import MessagingSubsystem
    from .messaging.ports import ServicePorts

    def tasks(limit: int) -> list[dict[str, Any]]:
        if store.store is None:
            return []
        found, _ = store.store.list(limit=limit)
        return [t.to_dict() for t in found]

    def cancel(task_id: str) -> dict[str, Any]:
        if store.store is None or supervisor.supervisor is None:
            raise RuntimeError("the task queue is not running")
        task = store.store.get(task_id)
        if task is None:
            raise KeyError(task_id)
        cancelled = supervisor.supervisor.cancel(task.id)
        now = store.store.get(task.id) or task
        return {"taskId": task.id, "cancelled": cancelled, "state": now.state.value}

    ports = ServicePorts(status=service.state, tasks=tasks, cancel=cancel)
    return MessagingSubsystem(service.bus, service.rpc.register, lambda: service.configs, service.state_dir, ports)
