"""The one module that knows every subsystem: what each is built from, and the fixed start order.

Start order: event router, task store, budgets, executors, agent supervisor, automation engine, chat, IPC
server, file watcher, cron scheduler, webhooks, messaging, web dashboard. Stop runs in reverse, so sources go
quiet before the engines they feed.
Subsystems never import each other: this module hands each one the narrow ports it needs (the bus, the
RPC server, a view of the current configs, the state directory, the task queue's submit function).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from . import doctor
from . import systemd as sd
from .budgets.subsystem import BudgetsSubsystem
from .chat.subsystem import PANE_ENV, ChatSubsystem
from .config import resolve_root
from .events.bus import EventBus
from .events.scheduler import CronScheduler
from .events.subsystems import WatcherSubsystem
from .executors.subsystem import ExecutorsSubsystem
from .policy.gate import Gate
from .ports import ConfigsView, Subsystem
from .rpc import RpcServer, RpcSubsystem
from .rules.engine import AutomationEngine
from .sandbox.launch import confine, interactive_prefix
from .tasks import subsystems as tasks
from .trace import api as trace_api
from .trace.graph import TracePorts, Tracer
from .web.subsystem import FD_NAMES as WEB_FD_NAMES
from .web.subsystem import WebSubsystem
from .webhooks.secrets import read_secret
from .webhooks.subsystem import FD_NAMES, WebhookSubsystem


class SessionRecorder:
    """The task store's port for the chat subsystem's interactive sessions (tasks of source ``session``)."""

    def __init__(self, store: tasks.StoreSubsystem, log_dir: Path) -> None:
        self.stores = store
        self.log_dir = log_dir

    def _store(self) -> Any:
        if self.stores.store is None:
            raise RuntimeError("the task store is not open")
        return self.stores.store

    def begin(self, project: str, prompt: str, agent: str, log_path: str) -> str:
        return str(self._store().begin_external(project, prompt, agent=agent, source="session").id)

    def end(self, task_id: str, *, exit_code: int | None, result: str | None, error: str | None,
            cancelled: bool) -> None:
        from .tasks.model import TaskState

        state = TaskState.cancelled if cancelled else TaskState.completed if exit_code == 0 else TaskState.failed
        self._store().mark_finished(task_id, state, exit_code=exit_code, result=result, error=error,
                                    log_path=str(self.log_dir / f"{task_id}.log"))

    def state(self, task_id: str) -> str | None:
        t = self._store().get(task_id)
        return None if t is None else t.state.value


def interactive_argv(profile: Any) -> list[str]:
    """``claude`` as a person runs it (no ``-p``), with the profile's model, tools and mode."""
    argv = ["claude"]
    if profile.model:
        argv += ["--model", profile.model]
    if profile.allowed_tools:
        argv += ["--allowedTools", ",".join(profile.allowed_tools)]
    if profile.permission_mode:
        argv += ["--permission-mode", profile.permission_mode]
    return argv + list(profile.args)


def worktree_setup(configs: Any, project: str, untrusted: Callable[[str], str | None]
                   ) -> tuple[list[str] | None, float]:
    """The project's ``sessions.worktree_setup``, else the service file's.  An untrusted project's own file
    runs nothing: its setup command is ignored, as its agent profiles and rules are."""
    pr = configs.projects.get(project)
    if pr is not None and untrusted(pr.root) is not None:
        pr = None
    for section in ([pr.config.sessions] if pr is not None else []) + [configs.service.sessions]:
        if section.worktree_setup:
            return list(section.worktree_setup), section.setup_timeout_seconds
    return None, configs.service.sessions.setup_timeout_seconds


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
    #: daemon.status as clients see it (status line, uptime, projects, subsystems): for chat bridges' /status
    state: Callable[[], dict[str, Any]]
    #: Stop the service as SIGTERM would (``daemon.stop``).
    request_stop: Callable[[], None] | None = None
    #: the policy gate: every run / send / spend / listen decision (``policy.gate``)
    gate: Gate | None = None


def session_argv(supervisor: tasks.SupervisorSubsystem, root: str, cwd: str, argv: list[str]) -> list[str]:
    """An interactive session's agent under the sandbox of its ``claude`` tasks: as a transient unit with a
    terminal where a user manager is reachable, else through bubblewrap.  ``network: allow`` becomes ``none``
    there: a session has no per-task proxy (yet)."""
    policy = supervisor.sandbox_policy("claude", root, cwd)
    if policy.enabled and policy.network == "allow":
        policy = msgspec.structs.replace(policy, network="none", allow_hosts=[])
    exe = shutil.which(argv[0]) or argv[0]
    if policy.enabled and supervisor.use_units:
        names = [n for n in PANE_ENV if n in os.environ] + ["TERM", "AIWG_SOCKET"]  # what the pane has
        return [*interactive_prefix(policy, program=exe, env_names=names), *argv[1:]]
    box = confine(policy, systemd=False, program=exe)
    if box.refused:
        raise RuntimeError(box.refused)
    return [*box.prefix, box.program or exe, *argv[1:]]


def build_subsystems(core: CorePorts) -> list[Subsystem]:
    scheduler = CronScheduler(core.bus, core.state_dir)
    core.rpc.register("cron.list", lambda _p, _c: {"jobs": scheduler.list_jobs()})
    # also registers task.*
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

    def get_task(task_id: str) -> dict[str, Any] | None:
        if store.store is None:
            return None
        task = store.store.get(task_id)
        return None if task is None else task.to_dict()

    chat = ChatSubsystem(state_dir=core.state_dir, rpc=core.rpc, subscribe=core.bus.subscribe,
                         unsubscribe=core.bus.unsubscribe, submit=submit_task, get_task=get_task,
                         recorder=SessionRecorder(store, core.state_dir / "logs"),
                         projects=lambda: list(core.configs().projects), resolve_root=resolve_root,
                         agent_argv=lambda project: interactive_argv(supervisor.profile("claude", project)),
                         setup=lambda project: worktree_setup(core.configs(), project, core.untrusted),
                         socket_path=core.socket_path, confine=lambda root, cwd, argv: session_argv(
                             supervisor, root, cwd, argv))
    supervisor.agent_args = chat.agent_args  # a turn's session flags, decided as it starts

    facts = doctor.Facts(config_status=core.config_status, serving=lambda: core.rpc.serving,
                         socket_path=core.socket_path, health=core.health, state_dir=core.state_dir,
                         agents=supervisor.agent_binaries, sandbox=supervisor.sandbox_mechanisms)
    core.rpc.register("doctor", lambda params, _conn: doctor.run(facts, params.project))
    supervisor.socket_path = core.socket_path
    automation = AutomationEngine(core.bus, core.state_dir, submit_task=submit_task,
                                  doctor=lambda project: doctor.run(facts, project), untrusted=core.untrusted)
    automation.register_rpc(core.rpc)
    webhooks = WebhookSubsystem(core.bus.publish, core.state_dir, lambda: sd.named_fd(*FD_NAMES))
    webhooks.register_rpc(core.rpc)
    trace_api.register(core.rpc, Tracer(_trace_ports(core, store, automation)))
    messaging = build_messaging(core, store, supervisor, automation, chat)
    web = WebSubsystem(core.rpc, core.state_dir,
                       inherited_fds=lambda: [fd for fd, name in sd.listen_fds() if name in WEB_FD_NAMES],
                       finished_since=lambda since: store.store.finished_since(since) if store.store else [],
                       read_secret=read_secret, socket_dir=lambda: core.socket_path().parent)
    web.register_rpc(core.rpc)
    return [
        core.bus,
        store,
        budgets,
        executors,  # before the supervisor: it re-adopts runs through them
        supervisor,
        automation,
        chat,
        RpcSubsystem(core.rpc, core.listen),
        WatcherSubsystem(core.bus),
        scheduler,
        webhooks,
        messaging,
        web,  # last: the dashboard reads every other subsystem through the RPC methods
    ]


class TurnWaiter:
    """Futures for tasks' final events: how a chat bridge waits for its /ask turn to complete."""

    FINAL = frozenset({"task.completed", "task.failed", "task.timeout", "task.cancelled"})

    def __init__(self, bus: EventBus) -> None:
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        bus.subscribe("task.*", self._on_task, name="messaging.turns")

    def _on_task(self, event: Any) -> None:
        if event.type in self.FINAL:
            fut = self.waiting.pop(str(event.data.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(event.data)

    def wait(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        fut = self.waiting.get(task_id)
        if fut is None:
            fut = self.waiting[task_id] = asyncio.get_running_loop().create_future()
        return fut


def build_messaging(core: CorePorts, store: tasks.StoreSubsystem, supervisor: tasks.SupervisorSubsystem,
                    automation: AutomationEngine, chat: ChatSubsystem) -> Subsystem:
    """The messaging hub, given narrow ports onto the service: status, tasks, cancel, ask and decide."""
    from .messaging.hub import MessagingSubsystem
    from .messaging.ports import AskRefused, ServicePorts

    def recent_tasks(limit: int) -> list[dict[str, Any]]:
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

    async def decide(approval_id: str, approve: bool, by: str, via: str, reason: str | None) -> dict[str, Any]:
        """The approval gates' decide, with their refusals as the hub's KeyError / ValueError."""
        from .rules.approvals import ApprovalAlreadyDecided, ApprovalNotAllowed, ApprovalNotFound

        try:
            return automation.approvals.decide(approval_id, approve, by, via, reason)
        except ApprovalNotFound:
            raise KeyError(approval_id) from None
        except ApprovalNotAllowed as exc:
            raise PermissionError(str(exc)) from None
        except ApprovalAlreadyDecided as exc:
            raise ValueError(str(exc)) from None

    turns = TurnWaiter(core.bus)

    async def final(task_id: str) -> dict[str, Any]:
        """A task once it is final (at once if it already is)."""
        from .tasks.model import FINISHED_STATES

        waiting = turns.wait(task_id)
        now = store.store.get(task_id) if store.store is not None else None
        if now is None:
            turns.waiting.pop(task_id, None)
            raise RuntimeError(f"task {task_id} is unknown")
        if now.state in FINISHED_STATES:
            turns.waiting.pop(task_id, None)
            return now.to_dict()
        return await waiting

    async def answer(task_id: str) -> str:
        """The answer of a turn's task, once it is final."""
        task = await final(task_id)
        if task.get("state") != "completed":
            raise RuntimeError(task.get("error") or f"the turn ended {task.get('state')}")
        return str(task.get("result") or "")

    async def ask(chat_key: str, text: str, project: str | None = None,
                  on_task: Callable[[str], None] | None = None) -> str:
        """One turn of the chat's own conversation (kept under its key: one resumed session per chat), in the
        project the chat picked (``/project``), else ``messaging.project``, else the only one served."""
        from .chat.conversations import ChatError

        while True:
            try:
                sent = chat.open().send(text, key=chat_key, source="messaging",
                                        project=project or core.configs().service.messaging.project)
                break
            except ChatError as exc:
                running = exc.data.get("taskId") if exc.busy else None
                if not running:
                    raise AskRefused(str(exc)) from None
                # the chat's last question is still being answered: this one waits behind it, as in the REPL
                await final(str(running))
        if on_task is not None:
            on_task(sent.task_id)
        return await answer(sent.task_id)

    def task(task_id: str) -> dict[str, Any] | None:
        t = store.store.get(task_id) if store.store is not None else None
        return t.to_dict() if t is not None else None

    ports = ServicePorts(status=core.state, tasks=recent_tasks, cancel=cancel, ask=ask, decide=decide,
                         answer=answer, task=task, projects=lambda: list(core.configs().projects),
                         channel_refused=core.gate.channel_refused if core.gate is not None else None)
    return MessagingSubsystem(core.bus, core.rpc.register, core.configs, core.state_dir, ports)


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
               if isinstance(ev.data, dict) and ((ev.type.startswith("task.") and ev.data.get("id") == tid)
                                                 or (ev.type == "policy.refused" and ev.data.get("ref") == tid))}
        for run in automation.store.by_event(task_id=tid):
            e = run.get("event") or {}
            if e.get("id"):
                out.setdefault(e["id"], dict(e))
        return sorted(out.values(), key=lambda e: e["id"])

    def approval(aid: str) -> dict[str, Any] | None:
        from .rules.approvals import ApprovalNotFound

        try:
            return automation.approvals.store.get(aid)
        except (ApprovalNotFound, AttributeError):
            return None

    def event_by_delivery(did: str) -> dict[str, Any] | None:
        for ev in reversed(core.bus.history):
            if ev.type.startswith("webhook.") and isinstance(ev.data, dict) and ev.data.get("delivery_id") == did:
                return event_dict(ev)
        runs = automation.store.by_event(delivery_id=did)
        return dict(runs[0]["event"]) if runs else None

    return TracePorts(event=event, rule_run=automation.store.by_run_id,
                      runs_for_event=lambda eid: automation.store.by_event(eid), task=task,
                      tasks_by_origin=by_origin, events_of_task=events_of_task, approval=approval,
                      event_by_delivery=event_by_delivery)
