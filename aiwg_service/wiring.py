"""The one module that knows every subsystem: what each is built from, and the fixed start order.

Start order: event router, task store, budgets, executors, agent supervisor, automation engine, IPC server,
file watcher, cron scheduler, webhooks, messaging. Stop runs in reverse, so sources go quiet before the engines they
feed.
Subsystems never import each other: this module hands each one the narrow ports it needs (the bus, the
RPC server, a view of the current configs, the state directory, the task queue's submit function).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import doctor
from . import systemd as sd
from .budgets.subsystem import BudgetsSubsystem
from .config import resolve_root
from .events.bus import EventBus
from .events.scheduler import CronScheduler
from .events.subsystems import WatcherSubsystem
from .executors.subsystem import ExecutorsSubsystem
from .ports import ConfigsView, Placeholder, Subsystem
from .rpc import RpcServer, RpcSubsystem
from .rules.engine import AutomationEngine
from .tasks import subsystems as tasks
from .trace import api as trace_api
from .trace.graph import TracePorts, Tracer
from .webhooks.subsystem import FD_NAMES, WebhookSubsystem


@dataclass(frozen=True)
class CorePorts:
    """What the core owns and lends out; each subsystem takes only the parts it uses."""

    bus: EventBus
    rpc: RpcServer
    configs: ConfigsView
    state_dir: Path
    listen: Callable[[], socket.socket]
    health: Callable[[], dict[str, Any]]
    config_status: Callable[[], dict[str, Any]]
    socket_path: Callable[[], Path]
    #: why a project's config may not run anything (not trusted), or None: rules and agent profiles obey it
    untrusted: Callable[[str], str | None]
    #: Stop the service as SIGTERM would (``daemon.stop``).
    request_stop: Callable[[], None] | None = None


def build_subsystems(core: CorePorts) -> list[Subsystem]:
    scheduler = CronScheduler(core.bus, core.state_dir)
    core.rpc.register("cron.list", lambda _p, _c: {"jobs": scheduler.list_jobs()})
    # also registers task.* and chat.send
    store, supervisor = tasks.build(core.bus.publish, core.rpc, core.configs, core.state_dir, core.request_stop,
                                    core.untrusted)

    def wake_supervisor() -> None:
        if supervisor.supervisor is not None:
            supervisor.supervisor.wake()

    def executor_counts() -> dict[str, dict[str, int]]:
        return supervisor.supervisor.counts_by_executor() if supervisor.supervisor is not None else {}

    executors = ExecutorsSubsystem(core.configs, core.state_dir, supervisor.executors, counts=executor_counts,
                                   on_available=wake_supervisor)
    supervisor.executor_gate = executors.gate
    executors.register_rpc(core.rpc)

    def submit_task(project: str, prompt: str, agent: str | None, priority: int, source: str,
                    timeout_s: float | None, origin: dict[str, Any]) -> str:
        """The automation engine's way into the task queue (it never imports the supervisor)."""
        if supervisor.supervisor is None:
            raise RuntimeError("the task queue is not running")
        from .tasks.model import split_agent

        try:
            # as the AIWG daemon ran a rule's agent: a name that is no profile of ours is a Claude Code subagent
            profile, subagent = split_agent(agent, supervisor.agent_names(project))
            task = supervisor.supervisor.submit(project, prompt, agent=profile, priority=priority,
                                                source=source, timeout_s=timeout_s, subagent=subagent,
                                                origin=origin)
        except ValueError as exc:
            raise ValueError(f"agent {agent!r} {exc}") from None
        except KeyError:
            raise ValueError(f"unknown agent profile {agent!r}") from None
        return task.id

    def sections() -> tuple[Any, dict[str, Any]]:
        c = core.configs()
        return c.service.budgets, {root: pr.config.budgets for root, pr in c.projects.items()}

    def held() -> list[Any]:
        return store.store.held() if store.store is not None else []

    budgets = BudgetsSubsystem(
        cost_rows=lambda: store.store.costs_since,  # type: ignore[union-attr]
        held=held, sections=sections, projects=lambda: list(core.configs().projects), resolve_root=resolve_root,
        emit=lambda type, project, data: core.bus.publish(type, project, data, "budgets"),
        release=lambda: supervisor.supervisor.release_held() if supervisor.supervisor is not None else None)
    budgets.register_rpc(core.rpc)
    supervisor.admit = budgets.ledger.admit
    supervisor.on_cost = budgets.ledger.on_cost

    facts = doctor.Facts(config_status=core.config_status, serving=lambda: core.rpc.serving,
                         socket_path=core.socket_path, health=core.health, state_dir=core.state_dir)
    automation = AutomationEngine(core.bus, core.state_dir, submit_task=submit_task,
                                  doctor=lambda project: doctor.run(facts, project), untrusted=core.untrusted)
    automation.register_rpc(core.rpc)
    webhooks = WebhookSubsystem(core.bus.publish, core.state_dir, lambda: sd.named_fd(*FD_NAMES))
    webhooks.register_rpc(core.rpc)
    trace_api.register(core.rpc, Tracer(_trace_ports(core, store, automation)))
    return [
        core.bus,
        store,
        budgets,
        executors,  # before the supervisor: it re-adopts runs through them
        supervisor,
        automation,
        RpcSubsystem(core.rpc, core.listen),
        WatcherSubsystem(core.bus),
        scheduler,
        webhooks,
        Placeholder("messaging"),
    ]


def _trace_ports(core: CorePorts, store: tasks.StoreSubsystem, automation: AutomationEngine) -> TracePorts:
    """``trace.get`` reads the bus history, the rule traces and the task store, through these."""

    def event_dict(ev: Any) -> dict[str, Any]:
        return {"id": ev.id, "type": ev.type, "time": ev.time, "project": ev.project, "source": ev.source,
                "data": ev.data}

    def event(eid: str) -> dict[str, Any] | None:
        for ev in reversed(core.bus.history):
            if ev.id == eid:
                return event_dict(ev)
        runs = automation.store.by_event(eid)
        return dict(runs[0]["event"]) if runs else None

    def task(tid: str) -> dict[str, Any] | None:
        t = store.store.get(tid) if store.store is not None else None
        return t.to_dict() if t is not None else None

    def by_origin(key: str, value: str) -> list[dict[str, Any]]:
        if store.store is None:
            return []
        return [t.to_dict() for t in store.store.by_origin(key, value)]

    def events_of_task(tid: str) -> list[dict[str, Any]]:
        out = {ev.id: event_dict(ev) for ev in core.bus.history
               if ev.type.startswith("task.") and isinstance(ev.data, dict) and ev.data.get("id") == tid}
        for run in automation.store.by_event(task_id=tid):
            e = run.get("event") or {}
            if e.get("id"):
                out.setdefault(e["id"], dict(e))
        return sorted(out.values(), key=lambda e: e["id"])

    return TracePorts(event=event, rule_run=automation.store.by_run_id,
                      runs_for_event=lambda eid: automation.store.by_event(eid), task=task,
                      tasks_by_origin=by_origin, events_of_task=events_of_task)
