"""The one module that knows every subsystem: what each is built from, and the fixed start order.

Start order: event router, task store, agent supervisor, automation engine, IPC server, file watcher,
cron scheduler, webhooks, messaging. Stop runs in reverse, so sources go quiet before the engines they feed.
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
from .events.bus import EventBus
from .events.scheduler import CronScheduler
from .events.subsystems import WatcherSubsystem
from .ports import ConfigsView, Placeholder, Subsystem
from .rpc import RpcServer, RpcSubsystem
from .rules.engine import AutomationEngine
from .tasks import subsystems as tasks
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


def build_subsystems(core: CorePorts) -> list[Subsystem]:
    scheduler = CronScheduler(core.bus, core.state_dir)
    core.rpc.register("cron.list", lambda _p, _c: {"jobs": scheduler.list_jobs()})
    # also registers task.* and chat.send
    store, supervisor = tasks.build(core.bus.publish, core.rpc, core.configs, core.state_dir)

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
                                                source=source, timeout_s=timeout_s, subagent=subagent)
        except ValueError as exc:
            raise ValueError(f"agent {agent!r} {exc}") from None
        except KeyError:
            raise ValueError(f"unknown agent profile {agent!r}") from None
        return task.id

    facts = doctor.Facts(config_status=core.config_status, serving=lambda: core.rpc.serving,
                         socket_path=core.socket_path, health=core.health, state_dir=core.state_dir)
    automation = AutomationEngine(core.bus, core.state_dir, submit_task=submit_task,
                                  doctor=lambda project: doctor.run(facts, project))
    automation.register_rpc(core.rpc)
    webhooks = WebhookSubsystem(core.bus.publish, core.state_dir, lambda: sd.named_fd(*FD_NAMES))
    webhooks.register_rpc(core.rpc)
    return [
        core.bus,
        store,
        supervisor,
        automation,
        RpcSubsystem(core.rpc, core.listen),
        WatcherSubsystem(core.bus),
        scheduler,
        webhooks,
        Placeholder("messaging"),
    ]
