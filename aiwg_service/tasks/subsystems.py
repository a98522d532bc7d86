"""The task store and the agent supervisor as service subsystems (see ``wiring.py`` for the order).

Profiles, limits and timeouts are read from the service's *current* configs at each lookup, so a
reload takes effect for every task that starts after it; ``apply`` only has to move the service-wide
limit and kick the scheduler.

Limits: ``daemon.max_parallel_actions`` of the service file caps all tasks together; each project's
own ``daemon.max_parallel_actions`` caps that project's tasks (the AIWG daemon's meaning of the key,
per project). Timeouts: the task's ``timeout``, else its profile's ``timeout_minutes``, else the
project's ``daemon.action_timeout_minutes``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import paths
from ..config import Configs, resolve_root
from ..executors.local import LocalExecutor, systemd_available
from ..executors.registry import Executors
from ..owned import OwnedTasks
from ..ports import ConfigsView
from ..rpc import RpcServer
from ..sandbox import Mechanism, Policy, SandboxSection, choose, narrow, resolve
from ..sandbox.schema import section_of
from . import sandbox_api
from .agents import BUILTIN_PROFILES, build_argv, child_env, locate_agent
from .api import TaskHub, register
from .model import AgentProfile, Task, TaskState
from .store import Store, remove_files
from .supervisor import Supervisor

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 86400.0
PRUNE_SLICE = 100  # tasks per transaction: a few ms of loop time each (their log files go in a thread)
#: Agents create files in project trees: they get a normal umask, not the service's UMask=0077.
CHILD_UMASK = 0o022


class StoreSubsystem:
    """Opens ``<state>/tasks.db``; prunes finished tasks past ``daemon.retention_days`` at start and daily."""

    name = "store"

    def __init__(self, state_dir: Path, configs: ConfigsView, hub: TaskHub) -> None:
        self.state_dir = state_dir
        self.configs = configs
        self.hub = hub
        self.store: Store | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pruning = OwnedTasks("store", log)
        self.last_pruned = 0

    async def start(self) -> None:
        self.store = Store(self.state_dir, emit=self.hub.emit)
        self.prune()

    def prune(self) -> None:
        """One pass in the background, then re-arm: a daily timer, not a loop that wakes to look."""
        self._pruning.spawn(self._prune(), "pruning finished tasks")
        self._timer = asyncio.get_running_loop().call_later(PRUNE_INTERVAL_S, self.prune)

    async def _prune(self) -> None:
        """Slices of ``PRUNE_SLICE`` tasks, the loop free between them (20,000 at once stalled it)."""
        assert self.store is not None
        days = self.configs().service.daemon.retention_days
        removed = 0
        try:
            while True:
                logs = self.store.prune_slice(days, batch=PRUNE_SLICE, unlink=False)
                removed += len(logs)
                await asyncio.to_thread(remove_files, logs)  # the log files go off the loop
                if len(logs) < PRUNE_SLICE:
                    break
        except Exception as exc:  # a full disk must not take the service down; try again tomorrow
            log.error("pruning the task store failed: %s", exc)
        self.last_pruned = removed
        if removed:
            log.info("pruned %d finished task(s) older than %d days", removed, days)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._pruning.close()  # a slice is one transaction: cancelled between slices, never inside
        if self.store is not None:
            self.store.close()

    def health(self) -> dict[str, Any]:
        if self.store is None:
            return {"state": "not started"}
        return {"path": str(self.store.path), "schema": self.store.schema_version, "last_pruned": self.last_pruned}


class SupervisorSubsystem:
    """Runs queued tasks under the service-wide and per-project limits."""

    name = "supervisor"

    def __init__(self, state_dir: Path, configs: ConfigsView, stores: StoreSubsystem, hub: TaskHub,
                 untrusted: Callable[[str], str | None] | None = None) -> None:
        self._configs = configs
        #: why a project's config is not trusted now (its agent profiles are then ignored), or None
        self._untrusted = untrusted or (lambda _project: None)
        self.stores = stores
        self.hub = hub
        self.supervisor: Supervisor | None = None
        self.log_dir = state_dir / "logs"
        #: Where tasks run; ``wiring.py`` may register more executors before start.
        self.use_units = systemd_available()
        self.executors = Executors(LocalExecutor(state_dir, use_systemd=self.use_units))
        #: Budget check and cost observer (set by ``wiring.py``; None: no budgets).
        self.admit: Any = None
        self.on_cost: Any = None
        #: Extra agent arguments per task (set by ``wiring.py``: the chat subsystem's session flags).
        self.agent_args: Callable[[Task], list[str]] | None = None
        #: Per-executor limits and outages (set by ``wiring.py`` from the executors subsystem).
        self.executor_gate: Any = None
        self.state_dir = state_dir
        #: The service's socket (set by ``wiring.py``): hidden from agents unless a profile grants it.
        self.socket_path: Callable[[], Path] = paths.socket_path

    # -- sandbox -----------------------------------------------------------------------------------
    def sandbox_section(self, agent: str, project: str | None) -> SandboxSection:
        """The owner's section for ``agent`` (service file, else built-in, else the default), narrowed by
        what the project's file says for it (trusted or not: it can only take away)."""
        c = self._configs()
        own = c.service.agents.get(agent) or BUILTIN_PROFILES.get(agent)
        base = section_of(own.sandbox) if own is not None else SandboxSection()
        pr = c.projects.get(project) if project is not None else None
        theirs = pr.config.agents.get(agent) if pr is not None else None
        return narrow(base, section_of(theirs.sandbox) if theirs is not None else None)

    def sandbox_policy(self, agent: str, project: str, cwd: str | None = None) -> Policy:
        """The resolved policy of an agent of ``agent`` working in ``cwd`` (default: the project)."""
        c = self._configs()
        section = self.sandbox_section(agent, project)
        kind = self.profile(agent, project).kind
        hidden = [str(self.state_dir), str(paths.runtime_base()), str(paths.config_dir())]
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            hidden.append(runtime)
        return resolve(section, kind=kind, cwd=cwd or project, home=os.path.expanduser("~"), service_dirs=hidden,
                       other_projects=[root for root in c.projects if root != project],
                       socket=str(self.socket_path()), profile=agent)

    def task_sandbox(self, task: Task, profile: AgentProfile) -> Policy:
        return self.sandbox_policy(task.agent, task.project)

    def sandbox_of(self, agent: str, project: str) -> tuple[Policy, Mechanism]:
        """The policy and the mechanism a task of ``agent`` would get now (local executor)."""
        policy = self.sandbox_policy(agent, project)
        return policy, choose(policy, systemd=self.use_units)

    def sandbox_mechanisms(self) -> dict[str, str]:
        """Profile -> mechanism (or why refused), service-wide, for the doctor."""
        home = os.path.join(os.path.expanduser("~"), "PROJECT")
        out = {}
        for name in self.agent_names(home):
            mech = self.sandbox_of(name, home)[1]
            out[name] = mech.name if mech.name != "refused" else f"refused: {mech.detail}"
        return out

    def profile(self, agent: str, project: str | None = None) -> AgentProfile:
        """Project file's profile (if its config is trusted), else the service file's, else a built-in."""
        c = self._configs()
        pr = c.projects.get(project) if project is not None else None
        if pr is not None and agent in pr.config.agents and self._untrusted(pr.root) is None:
            return pr.config.agents[agent]
        if agent in c.service.agents:
            return c.service.agents[agent]
        if agent in BUILTIN_PROFILES:
            return BUILTIN_PROFILES[agent]
        raise KeyError(f"unknown agent profile {agent!r}")

    def agent_names(self, project: str) -> list[str]:
        c = self._configs()
        names = set(BUILTIN_PROFILES) | set(c.service.agents)
        pr = c.projects.get(project)
        if pr is not None and self._untrusted(pr.root) is None:
            names |= set(pr.config.agents)
        return sorted(names)

    def agent_binaries(self, project: str | None = None) -> dict[str, str | None]:
        """Each profile -> the executable a task of it would run now (None: not found): for the doctor."""
        c = self._configs()
        names = self.agent_names(project) if project else sorted(set(BUILTIN_PROFILES) | set(c.service.agents))
        out: dict[str, str | None] = {}
        for name in names:
            try:
                prof = self.profile(name, project)
                env = child_env(prof, "doctor")
                out[name] = locate_agent(build_argv(prof, "")[0], env.get("PATH"), env.get("HOME"))
            except Exception:
                out[name] = None
        return out

    def project_limit(self, project: str) -> int | None:
        pr = self._configs().projects.get(project)
        return pr.config.daemon.max_parallel_actions if pr is not None else None

    def project_timeout(self, project: str) -> float:
        c = self._configs()
        pr = c.projects.get(project)
        return 60.0 * (pr.config if pr is not None else c.service).daemon.action_timeout_minutes

    # -- subsystem ----------------------------------------------------------------------------------
    async def start(self) -> None:
        assert self.stores.store is not None, "the store subsystem starts first"
        c = self._configs()
        scope = self.use_units
        self.supervisor = Supervisor(
            self.stores.store, self.profile, self.hub.emit,
            max_parallel=c.service.daemon.max_parallel_actions,
            per_project_limit=self.project_limit,
            default_timeout_s=self.project_timeout,
            log_dir=self.log_dir,
            use_systemd_scope=scope,
            project_profiles=self.profile,
            child_umask=CHILD_UMASK,
            on_output=self.hub.output,
            executors=self.executors,
            executor_gate=self.executor_gate,
            admit=self.admit,
            on_cost=self.on_cost,
            agent_args=self.agent_args,
            sandbox=self.task_sandbox,
        )
        recovered = await self.supervisor.start()
        for t in recovered:
            log.warning("task %s was interrupted by a restart: now %s", t.id, t.state.value,
                        extra={"PROJECT": t.project})
        log.info("agent supervisor started: max %d parallel, %d running%s", self.supervisor.max_parallel,
                 len(self.supervisor.running), ", each task in its own transient systemd unit" if scope else
                 ", each task under a detached runner")

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop(grace_s=self._configs().service.daemon.stop_timeout_seconds)

    def apply(self, configs: Configs) -> None:
        if self.supervisor is None:
            return
        self.supervisor.max_parallel = configs.service.daemon.max_parallel_actions
        self.supervisor.release_held()  # a raised budget lets held tasks go
        self.supervisor.wake()  # a raised limit (or a changed project cap) may let queued tasks start

    def health(self) -> dict[str, Any]:
        sup = self.supervisor
        if sup is None:
            return {"state": "not started"}
        try:
            queued = sup.store.count(TaskState.queued)
        except Exception:
            queued = None
        adopted = sum(1 for t in sup.running.values() if t.adopted)
        return {"running": len(sup.running), "adopted": adopted, "queued": queued,
                "max_parallel": sup.max_parallel, "systemd_units": sup.use_systemd_scope,
                "executors": self.executors.names(), "log_followers": self.hub.followers}

    def project_health(self, root: str) -> dict[str, Any]:
        """The counts ``daemon.status`` shows a client that came through ``root``'s own socket."""
        sup = self.supervisor
        if sup is None:
            return {}
        try:
            queued: int | None = sup.store.count(TaskState.queued, root)
        except Exception:
            queued = None
        return {"running": sum(1 for t in sup.running.values() if t.project == root), "queued": queued}


def build(publish: Callable[..., Any], rpc: RpcServer, configs: ConfigsView, state_dir: Path,
          request_stop: Callable[[], None] | None = None,
          untrusted: Callable[[str], str | None] | None = None) -> tuple[StoreSubsystem, SupervisorSubsystem]:
    """Both subsystems and the ``task.*``/``chat.send``/``daemon.stop`` methods, sharing one event hub.

    ``untrusted(project)``: why a project's config is not trusted (its agent profiles are then ignored).

    ``publish(type, project, data, source)`` is the bus's publish: tasks never import the bus.
    """
    hub = TaskHub(lambda type, project, data: publish(type, project, data, "tasks"))
    stores = StoreSubsystem(state_dir, configs, hub)
    sup = SupervisorSubsystem(state_dir, configs, stores, hub, untrusted)

    def get_store() -> Store:
        assert stores.store is not None
        return stores.store

    def get_sup() -> Supervisor:
        assert sup.supervisor is not None
        return sup.supervisor

    register(rpc, get_store, get_sup, hub,
             projects=lambda: list(configs().projects), agent_names=sup.agent_names,
             resolve_root=resolve_root, log_dir=sup.log_dir, request_stop=request_stop)
    sandbox_api.register(rpc, sup, lambda: list(configs().projects), resolve_root)
    return stores, sup
