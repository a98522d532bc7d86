"""Runs queued tasks through executors under service-wide and per-project limits and budgets.

Event-driven: the scheduler runs only when something changes (submit, a run ending, start, a
cancel, a budget released) via :meth:`Supervisor.wake`; nothing polls.

The supervisor never spawns an agent itself: an :class:`~aiwg_service.executors.Executor` does
(``local`` by default: a transient systemd unit or a detached runner), so agents outlive the
service.  Each attempt is recorded ``running`` *before* it is launched, then gets the executor's
handle; output is followed from the task's log file (``executors/follow.py``), not a pipe.  A
graceful stop leaves agents running; the next start re-adopts them (or records how they ended
while the service was away) and the concurrency limit counts them again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..executors import Executor, ExecutorError, ExitInfo, Handle, LaunchError, LaunchSpec, Probe, RunRef
from ..executors.follow import LogTail, LogWatch
from ..executors.local import LocalExecutor
from ..executors.registry import DEFAULT_EXECUTOR, Executors
from ..executors.remote_common import ExecutorUnavailable
from ..owned import OwnedTasks
from ..policy import identity
from ..sandbox.policy import Policy
from .agents import StreamJsonParser, build_argv, child_env, locate_agent, prompt_stdin
from .model import AgentProfile, Emit, Task, TaskSource, TaskState, parse_time
from .store import Store, StoreError

__all__ = ["Admission", "ExecutorGate", "Supervisor"]

log = logging.getLogger(__name__)

_TAIL = 4000  # bytes of raw output kept as the result of agents that do not speak stream-json

#: ``gate(executor_name, running_on_it) -> None`` (may start there) or why its tasks wait, queued
#: (the executor is full or down).  The gate itself arranges a wake-up for when that may change.
ExecutorGate = Callable[[str, int], "str | None"]
#: ``admit(task, profile) -> None`` (may start) or the reason it must wait (``held``).
Admission = Callable[[Task, AgentProfile], str | None]


class _Run:
    """In-memory state of one attempt, from pick (or re-adoption) to its recorded outcome."""

    __slots__ = (
        "adopted",
        "budget",
        "executor",
        "had_session",
        "handle",
        "job",
        "launch",
        "parser",
        "reason",
        "replaying",
        "tail",
        "tail_bytes",
        "task",
        "timeout",
    )

    def __init__(self, task: Task, executor: Executor) -> None:
        self.task = task
        self.executor = executor
        self.handle: Handle | None = None
        self.launch: asyncio.Future[Handle] | None = None
        self.job: asyncio.Task[None] | None = None
        self.reason: str | None = None  # None | "timeout" | "cancel" | "stop" | "budget"
        self.parser = StreamJsonParser()
        self.tail: LogTail | None = None
        self.tail_bytes = bytearray()
        self.replaying = False
        self.had_session = False
        self.adopted = False
        self.budget: float | None = None
        self.timeout: float = 0.0


class Supervisor:
    """Queue runner.  All methods must be called on the event loop's thread."""

    def __init__(
        self,
        store: Store,
        profiles: Callable[[str], AgentProfile],
        emit: Emit | None = None,
        *,
        max_parallel: int = 3,
        per_project_limit: Callable[[str], int | None] | None = None,
        default_timeout_s: float | Callable[[str], float] = 3600.0,
        log_dir: str | os.PathLike[str],
        use_systemd_scope: bool = False,
        kill_grace_s: float = 5.0,
        drain_timeout_s: float = 2.0,
        project_profiles: Callable[[str, str], AgentProfile] | None = None,
        child_umask: int | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        executors: Executors | None = None,
        executor_gate: ExecutorGate | None = None,
        admit: Admission | None = None,
        on_cost: Callable[[Task, float | None], None] | None = None,
        agent_args: Callable[[Task], list[str]] | None = None,
        sandbox: Callable[[Task, AgentProfile], Policy | None] | None = None,
    ) -> None:
        """``project_profiles(agent, project)``, when given, resolves profiles instead of ``profiles``
        (a project may override service-wide profiles).  ``default_timeout_s`` may be a function of
        the project.  ``child_umask`` is the umask agents run with.  ``on_output(task_id, data)``
        sees every byte appended to a task's log, once, in order (``task.logs`` followers).
        ``executors`` routes by ``agents.<profile>.executor`` (default: a local executor keeping
        its run files next to ``log_dir``; ``use_systemd_scope`` makes it use transient units).
        ``admit`` is the budget check before a start; ``on_cost(task, running_cost)`` is told of
        each running task's cost as it rises (``None`` when it ends).  ``agent_args(task)`` gives extra
        arguments for a ``claude`` agent as the task starts (a chat turn's session flags)."""
        if max_parallel < 1:
            raise ValueError("max_parallel must be >= 1")
        self.store = store
        self.profiles = profiles
        self.emit = emit
        self.max_parallel = max_parallel
        self.per_project_limit = per_project_limit
        self.default_timeout_s = default_timeout_s
        self.log_dir = Path(log_dir)
        self.use_systemd_scope = use_systemd_scope
        self.kill_grace_s = kill_grace_s
        self.drain_timeout_s = drain_timeout_s
        self.project_profiles = project_profiles
        self.child_umask = child_umask
        self.on_output = on_output
        self.executor_gate = executor_gate
        #: stops under way (cancel, budget): kept, so stop waits for them and their failures are logged
        self._stopping_runs = OwnedTasks("supervisor", log)
        #: task id -> the reason recorded for it while queued (written only when it changes).
        self._waiting: dict[str, str] = {}
        self.executors = executors if executors is not None else Executors(
            LocalExecutor(self.log_dir.parent, use_systemd=use_systemd_scope))
        self.admit = admit
        self.on_cost = on_cost
        self.agent_args = agent_args
        #: The task's confinement (``sandbox.resolve`` with the service's view): None runs it unconfined.
        self.sandbox = sandbox
        #: Pause before trying the queue again after a failed store write (disk full).
        self.store_retry_s = 5.0
        #: Interval of the reconciliation that replaces a run's failed liveness source (never otherwise).
        self.reconcile_s = 2.0
        self._runs: dict[str, _Run] = {}
        #: Runs whose outcome is recorded, still making it durable and dropping their run files.
        self._finishing: dict[str, _Run] = {}
        self._watch: LogWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopping = False
        self._wake_pending = False
        self._idle = asyncio.Event()
        #: Set by ``daemon.stop {agents: true}`` (``aiwgctl stop --agents``): the next stop stops agents.
        self.stop_agents = False
        self.detached: list[str] = []

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> list[Task]:
        """Re-adopt what a previous life left running, settle what cannot be, then schedule.

        Returns the tasks recovery settled without re-adopting (re-queued or failed)."""
        self._loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._watch = LogWatch(self.log_dir)
        settled = await self._readopt()
        self._started = True
        self._stopping = False
        self.wake()
        return settled

    async def stop(self, grace_s: float = 10.0, *, stop_agents: bool | None = None) -> None:
        """Start nothing new.  By default leave running agents running (recorded as detached; the
        next start re-adopts them).  With ``stop_agents`` (or after ``daemon.stop {agents}``): let
        them finish for ``grace_s``, then stop them and record them ``interrupted`` (the next start
        re-queues them per the profile's ``retry``)."""
        self._stopping = True
        stop_agents = self.stop_agents if stop_agents is None else stop_agents
        finishing = [r.job for r in self._finishing.values() if r.job is not None]
        if finishing:  # recorded runs still dropping their files: let them (it takes an fsync)
            await asyncio.wait(finishing, timeout=10)
        runs = list(self._runs.values())
        jobs = [r.job for r in runs if r.job is not None]
        if stop_agents and jobs:
            if grace_s > 0:
                await asyncio.wait(jobs, timeout=grace_s)
            for run in list(self._runs.values()):
                await self._terminate(run, "stop")
            await asyncio.gather(*jobs, return_exceptions=True)
        elif jobs:
            self.detached = sorted(self._runs)
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            # launches under way: let them finish (all at once, not one after another) and record their handles
            await asyncio.gather(*(self._settle_launch(run, 30) for run in runs
                                   if run.launch is not None and run.handle is None))
            try:
                self.store.note_detached(self.detached)
            except StoreError as e:
                log.error("could not record the agents left running: %s", e)
            log.info("left %d agent(s) running for the next start to re-adopt: %s", len(self.detached),
                     ", ".join(self.detached))
            self._emit("agents.detached", None, {"tasks": self.detached})
        # cancels and budget stops asked for before the stop: let them end (SIGKILL comes after kill_grace_s)
        await self._stopping_runs.close(grace=self.kill_grace_s + 5)
        if self._watch is not None:
            self._watch.close()
        await self.executors.close()

    async def _settle_launch(self, run: _Run, timeout: float) -> None:
        assert run.launch is not None
        try:
            handle = await asyncio.wait_for(asyncio.shield(run.launch), timeout)
            self.store.set_handle(run.task.id, handle)
        except Exception as e:  # recovery's claim settles it at the next start
            log.warning("task %s: launch cut short by the stop: %s", run.task.id, e)

    # -- API ------------------------------------------------------------------------------

    def submit(self, project: str, prompt: str, *, agent: str = "claude", priority: int = 0,
               source: TaskSource | str = TaskSource.cli, timeout_s: float | None = None,
               subagent: str | None = None, origin: dict[str, Any] | None = None,
               max_budget_usd: float | None = None, executor: str | None = None) -> Task:
        """Queue a task (raises KeyError for an unknown agent, ExecutorError for an unknown executor,
        StoreError if it could not be stored) and wake the scheduler.  ``origin`` records why it runs
        (see ``aiwgctl trace``); ``executor`` overrides the profile's."""
        self._profile(agent, project)
        if executor is not None:
            self.executors.get(executor)
        src = TaskSource(source)
        org = dict(origin or {})
        if not org:
            org = {"cli": True} if src is TaskSource.cli else {"source": src.value}
        task = self.store.submit(project, prompt, agent=agent, priority=priority, source=src,
                                 timeout_s=timeout_s, subagent=subagent, origin=org, max_budget_usd=max_budget_usd,
                                 executor=executor)
        self._idle.clear()
        self.wake()
        return task

    def cancel(self, task_id: str) -> bool:
        """Cancel a queued or held task at once, or a running one (SIGTERM to its group, SIGKILL
        after grace; it becomes ``cancelled`` when it has exited).  False if it is none of these."""
        run = self._runs.get(task_id)
        if run is not None:
            if run.reason in (None, "cancel"):
                self._stopping_runs.spawn(self._terminate(run, "cancel"), f"cancel of task {task_id}")
                return True  # requested: the task becomes ``cancelled`` once it has exited
            return False
        return self.store.cancel_queued(task_id) is not None

    def wake(self) -> None:
        """Ask for a scheduling pass soon (coalesced; cheap to call often)."""
        if self._loop is None or self._wake_pending:
            return
        self._wake_pending = True
        self._loop.call_soon(self._schedule)

    def release_held(self) -> list[Task]:
        """Budgets changed (a reload, a new day): re-queue held tasks whose budgets allow them now."""
        out = []
        try:
            held = self.store.held()
        except Exception as e:
            log.error("cannot read held tasks: %s", e)
            return out
        for t in held:
            try:
                prof = self._profile(t.agent, t.project)
            except KeyError:
                prof = AgentProfile()
            if self.admit is None or self.admit(t, prof) is None:
                self._unreserve(t)  # only asked; its start will be admitted (and reserve) again
                done = self.store.release(t.id)
                if done is not None:
                    out.append(done)
        if out:
            self.wake()
        return out

    @property
    def running(self) -> dict[str, Task]:
        return {tid: r.task for tid, r in self._runs.items()}

    def running_cost(self, task_id: str) -> float | None:
        run = self._runs.get(task_id)
        return None if run is None else run.parser.running_cost()

    async def wait_idle(self) -> None:
        """Until nothing runs and nothing startable is queued (for tests and shutdown scripts)."""
        while True:
            await self._idle.wait()
            if not self._runs and not self._wake_pending:
                return
            self._idle.clear()

    # -- scheduling ----------------------------------------------------------------------

    def _retry_for(self, agent: str) -> int:
        return self.profiles(agent).retry

    def _retry_for_task(self, task: Task) -> int:
        return self._profile(task.agent, task.project).retry

    def _profile(self, agent: str, project: str) -> AgentProfile:
        if self.project_profiles is not None:
            return self.project_profiles(agent, project)
        return self.profiles(agent)

    def _limit(self, project: str) -> int | None:
        return None if self.per_project_limit is None else self.per_project_limit(project)

    def executor_of(self, task: Task, profile: AgentProfile) -> str:
        """Where a task runs: its own choice, else its profile's (``local`` by default)."""
        return task.executor or profile.executor or DEFAULT_EXECUTOR

    def _schedule(self) -> None:
        self._wake_pending = False
        if not self._started or self._stopping:
            return
        per_project = Counter(r.task.project for r in self._runs.values())  # re-adopted runs count
        per_exec = Counter(r.executor.name for r in self._runs.values())
        excluded: set[str] = set()
        for p, n in per_project.items():
            lim = self._limit(p)
            if lim is not None and n >= lim:
                excluded.add(p)
        skip: set[str] = set()  # queued tasks whose executor is full or down: they stay queued
        blocked: dict[str, str | None] = {}  # executor name -> why not (None: open), this pass
        while len(self._runs) < self.max_parallel:
            try:
                task = self.store.next_queued(excluded, skip.union(self._runs))
            except Exception as e:  # closed or corrupt db: nothing to start
                log.error("cannot read the queue: %s", e)
                break
            if task is None:
                break
            lim = self._limit(task.project)
            if lim is not None and per_project[task.project] >= lim:
                excluded.add(task.project)
                continue
            try:
                profile = self._profile(task.agent, task.project)
            except Exception as e:
                self.store.fail_queued(task.id, f"unknown agent profile {task.agent!r}: {e}")
                continue
            name = self.executor_of(task, profile)
            if self.executor_gate is not None:
                if name not in blocked:
                    blocked[name] = self.executor_gate(name, per_exec[name])
                why = blocked[name]
                if why is not None:
                    skip.add(task.id)
                    self._note_waiting(task, why)
                    continue
            if self.admit is not None:
                reason = self.admit(task, profile)
                if reason is not None:
                    try:
                        self.store.hold(task.id, reason)
                    except StoreError as e:
                        log.error("task %s: cannot hold it: %s", task.id, e)
                        break
                    continue
            try:
                executor = self.executors.get(name)
            except ExecutorError as e:
                self._unreserve(task)
                self.store.fail_queued(task.id, str(e))
                continue
            per_project[task.project] += 1
            per_exec[name] += 1
            blocked.pop(name, None)  # one more runs there now: ask the gate again for the next task
            if lim is not None and per_project[task.project] >= lim:
                excluded.add(task.project)
            self._waiting.pop(task.id, None)
            run = _Run(task, executor)
            self._runs[task.id] = run
            run.job = asyncio.get_running_loop().create_task(self._run(run, profile), name=f"aiwg-task-{task.id}")
        if not self._runs:
            self._idle.set()

    def _unreserve(self, task: Task) -> None:
        """An admitted task that does not start now: give back what its admission reserved."""
        if self.on_cost is not None:
            self._safe(self.on_cost, task, None)

    def counts_by_executor(self) -> dict[str, dict[str, int]]:
        """Running and queued tasks per executor name (for ``executors.list``)."""
        out: dict[str, dict[str, int]] = {}
        for run in self._runs.values():
            c = out.setdefault(run.executor.name, {"running": 0, "queued": 0})
            c["running"] += 1
        for agent, project, requested, n in self.store.queued_groups():
            name = requested
            if name is None:
                try:
                    name = self._profile(agent, project).executor or DEFAULT_EXECUTOR
                except Exception:
                    name = DEFAULT_EXECUTOR
            c = out.setdefault(name, {"running": 0, "queued": 0})
            c["queued"] += n
        return out

    def _note_waiting(self, task: Task, why: str) -> None:
        """Record why a queued task waits (once per change: no write per scheduling pass)."""
        if self._waiting.get(task.id) == why and task.held_reason == why:
            return
        try:
            self.store.set_queued_reason(task.id, why)
            self._waiting[task.id] = why
        except StoreError as e:
            log.error("task %s: cannot record why it waits: %s", task.id, e)

    # -- one run ---------------------------------------------------------------------------

    def _timeout_for(self, task: Task, profile: AgentProfile) -> float:
        if task.timeout_s:
            return task.timeout_s
        if profile.timeout_minutes:
            return profile.timeout_minutes * 60.0
        if callable(self.default_timeout_s):
            return self.default_timeout_s(task.project)
        return self.default_timeout_s

    async def _run(self, run: _Run, profile: AgentProfile | None = None, probe: Probe | None = None) -> None:
        store_failed = False
        try:
            if probe is None:
                assert profile is not None
                await self._launch(run, profile)
            else:
                await self._follow(run, probe.log_start or 0, probe.exit)
        except asyncio.CancelledError:
            # A graceful stop: the agent keeps running; its row stays 'running' for re-adoption.
            if self._stopping:
                return
            raise
        except StoreError as e:
            # e.g. disk full: the task stays where it was; retry after a pause rather than spin on it.
            store_failed = True
            log.error("task %s: store write failed: %s", run.task.id, e)
            self._emit("task.store_error", run.task.project, {"id": run.task.id, "error": str(e)})
        except Exception:
            log.exception("task %s: supervisor error", run.task.id)
        finally:
            if run.tail is not None and self._watch is not None:
                self._watch.remove(run.tail)
            if self._runs.get(run.task.id) is run:
                del self._runs[run.task.id]
            if self._finishing.get(run.task.id) is run:
                del self._finishing[run.task.id]
            if self.on_cost is not None:
                self._safe(self.on_cost, run.task, None)
            if not self._stopping:
                if store_failed and self._loop is not None:
                    self._loop.call_later(self.store_retry_s, self.wake)
                else:
                    self.wake()
            if not self._runs:
                self._idle.set()

    async def _launch(self, run: _Run, profile: AgentProfile) -> None:
        task = run.task
        budget = task.max_budget_usd if task.max_budget_usd is not None else profile.max_budget_usd
        argv = build_argv(profile, task.prompt, task.subagent, budget)
        if self.agent_args is not None and profile.kind == "claude":
            try:
                extra = self.agent_args(task)
                argv += extra  # the prompt is on stdin, not in argv
            except Exception as e:
                log.exception("task %s: cannot compute its agent arguments", task.id)
                self.store.fail_queued(task.id, f"cannot prepare the agent's arguments: {e}")
                return
        env = child_env(profile, task.id)
        env.update(identity.child_env("agent", task.project, task.id))  # its calls back carry who it is
        try:
            policy = self.sandbox(task, profile) if self.sandbox is not None else None
        except (OSError, ValueError) as e:
            self.store.fail_queued(task.id, f"cannot resolve the agent's sandbox: {e}")
            return
        # Resolve here so "no such agent" is a clear error before anything is launched.
        exe = locate_agent(argv[0], env.get("PATH"), env.get("HOME"))
        if exe is None:
            where = " or in ~/.local/bin, ~/.claude/local" if argv[0] == "claude" else ""
            self.store.fail_queued(task.id, f"cannot start agent {argv[0]!r}: not found on PATH{where}")
            return
        argv = [exe, *argv[1:]]
        log_path = self.log_dir / f"{task.id}.log"
        if self._stopping or run.reason is not None:
            if run.reason == "cancel":
                self.store.cancel_queued(task.id)
            return
        try:
            log_start = os.stat(log_path).st_size
        except FileNotFoundError:
            log_start = 0
        except OSError as e:
            self.store.fail_queued(task.id, f"cannot use log {log_path}: {e.strerror}")
            return
        # Recorded before the launch: a crash from here on leaves a row recovery can settle.
        started = self.store.mark_started(task.id, log_path=str(log_path), executor=run.executor.name)
        if started is None:  # no longer queued (cancelled behind our back): do not run it
            return
        # Committed, not yet fsynced: a crash of the service cannot lose it (the WAL is in the page cache),
        # and the fsync it will share with others is not waited for here; a machine crash kills the run too,
        # and recovery then re-queues it like any interrupted run.
        run.task = started
        run.budget = budget
        run.timeout = self._timeout_for(task, profile)
        spec = LaunchSpec(
            task_id=task.id, attempt=started.attempts, argv=argv, cwd=task.project, env=env,
            log_path=str(log_path), stdin=prompt_stdin(profile, task.prompt), timeout_s=run.timeout,
            memory_max=profile.memory_max,
            cpu_quota=profile.cpu_quota, umask=self.child_umask,
            max_output_bytes=profile.max_output_mb * 1024 * 1024, kill_grace_s=self.kill_grace_s,
            profile=task.agent, project=task.project, options=dict(profile.executor_options), sandbox=policy)
        self._prices(run, profile)
        # Shielded: a graceful stop arriving mid-launch lets the launch finish (see :meth:`stop`).
        run.launch = asyncio.ensure_future(run.executor.start(spec))
        try:
            handle = await asyncio.shield(run.launch)
        except LaunchError as e:
            self.store.mark_finished(task.id, TaskState.failed, error=str(e)[:500])
            return
        except ExecutorUnavailable as e:
            # Nothing ran (the executor made sure of it): the task goes back to the queue, with the
            # reason, and waits for the executor (the gate wakes us when it answers again).
            why = f"executor {run.executor.name} is unavailable: {e}"
            log.warning("task %s: %s; it stays queued", task.id, why, extra={"TASK_ID": task.id})
            if self.store.requeue_unstarted(task.id) is not None:
                self.store.set_queued_reason(task.id, why[:500])
                self._waiting[task.id] = why
            return
        run.handle = handle
        try:
            now = self.store.set_handle(task.id, handle)
        except StoreError:
            # Not recorded, so it must not run on unseen: stop it before anyone depends on it.
            await run.executor.cancel(handle, grace_s=0)
            await run.executor.wait(handle)
            raise
        if now is not None:
            run.task = now
        if run.reason is not None:
            await self._terminate(run, run.reason, force=True)
        await self._follow(run, log_start, None)

    async def _wait_end(self, run: _Run) -> ExitInfo:
        """Until the run ends, by its executor's event source (a pidfd, a unit's state, a job's end).

        If that source fails, the run is not given up (it stays ``running`` only while something
        proves it): the executor is asked every ``reconcile_s`` what became of it, until it ends."""
        assert run.handle is not None
        try:
            return await run.executor.wait(run.handle)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("task %s: lost its liveness source (%s); asking executor %s every %gs until it ends",
                        run.task.id, e, run.executor.name, self.reconcile_s, extra={"TASK_ID": run.task.id})
        ref = RunRef(task_id=run.task.id, attempt=max(run.task.attempts, 1), log_path=run.task.log_path or "",
                     handle=run.handle)
        while True:
            await asyncio.sleep(self.reconcile_s)
            try:
                probe = (await run.executor.poll([ref])).get(run.task.id)
            except Exception as e:  # unreachable for now: ask again
                log.debug("task %s: reconciliation failed: %s", run.task.id, e)
                continue
            if probe is None or probe.state == "running":
                continue
            if probe.state == "finished" and probe.exit is not None:
                return probe.exit
            return probe.exit or ExitInfo(error=f"the run was {probe.state.replace('_', ' ')}")

    def _prices(self, run: _Run, profile: AgentProfile) -> None:
        if profile.price_per_mtok is not None:
            run.parser.prices = profile.price_per_mtok.as_tuple()

    async def _follow(self, run: _Run, log_start: int, finished: ExitInfo | None) -> None:
        """Follow the run's log until it ends, then record it.  ``finished``: it already ended
        (while the service was away): just read its stream and record it."""
        assert self._watch is not None and run.handle is not None
        log_path = run.task.log_path or str(self.log_dir / f"{run.task.id}.log")
        tail = LogTail(log_path, log_start, lambda data: self._output(run, data))
        run.tail = tail
        if run.adopted:
            run.replaying = True  # what the previous life already delivered: parse only
            try:
                tail.read()
            finally:
                run.replaying = False
                run.had_session = run.parser.session_id is not None
        if finished is None:
            self._watch.add(tail)  # never fails: it falls back to reading on a timer (and says so)
            info = await self._wait_end(run)
        else:
            info = finished
        tail.read()
        if info.stream_tail:
            run.parser.close()
            run.parser.feed(info.stream_tail.encode())
        run.parser.close()
        self._record(run, info)
        # Recorded: its slot is free now (status and limits count it no more); the fsync and the removal of
        # its run files finish in this same job, which stop() still waits for (``_finishing``).
        if self._runs.get(run.task.id) is run:
            del self._runs[run.task.id]
            self._finishing[run.task.id] = run
            self.wake()
        await self.store.durable()  # the outcome is on disk before the run's own record of it goes
        try:
            await run.executor.forget(run.handle)
        except ExecutorError as e:
            log.warning("task %s: %s", run.task.id, e)

    def _output(self, run: _Run, data: bytes) -> None:
        run.parser.feed(data)
        tail = run.tail_bytes
        tail += data
        if len(tail) > 2 * _TAIL:
            del tail[:-_TAIL]
        if run.replaying:
            return
        if self.on_output is not None:
            self._safe(self.on_output, run.task.id, data)
        p = run.parser
        if not run.had_session and p.session_id:
            run.had_session = True
            self._emit("task.session", run.task.project,
                       {"id": run.task.id, "session_id": p.session_id, "model": p.model})
        cost = p.running_cost()
        if cost is not None:
            if self.on_cost is not None:
                self._safe(self.on_cost, run.task, cost)
            # A reported total (the result line) means the agent is done: over budget, but not stopped.
            if run.budget is not None and cost > run.budget and run.reason is None and p.cost_usd is None:
                log.warning("task %s: cost $%.4f passed its budget $%.4f: stopping it", run.task.id, cost,
                            run.budget, extra={"TASK_ID": run.task.id})
                self._emit("budget.exceeded", run.task.project, {
                    "budget": "task", "key": run.task.id, "spent_usd": round(cost, 6), "limit_usd": run.budget,
                    "task": run.task.id, "action": "stopped"})
                self._stopping_runs.spawn(self._terminate(run, "budget"), f"budget stop of task {run.task.id}")

    def _record(self, run: _Run, info: ExitInfo) -> None:
        parser = run.parser
        usage = parser.total_usage()
        summary = parser.summary()
        if summary is None and parser.json_lines == 0 and run.tail_bytes:
            summary = bytes(run.tail_bytes[-_TAIL:]).decode("utf-8", "replace").strip() or None
        cost_status = parser.cost_status
        if cost_status is None and parser.json_lines:
            cost_status = "missing"
        fields: dict[str, Any] = {
            "exit_code": info.exit_code,
            "signal": info.signal,
            "session_id": parser.session_id,
            "cost_usd": parser.cost_usd if parser.cost_usd is not None else (
                round(parser.running_cost() or 0.0, 6) if parser.prices is not None and usage else None),
            "cost_status": cost_status if parser.cost_usd is not None or parser.prices is None
            or not usage else "estimated",
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cache_creation_tokens": usage.cache_creation_input_tokens if usage else None,
            "cache_read_tokens": usage.cache_read_input_tokens if usage else None,
            "num_turns": parser.num_turns,
            "result": summary,
            "output_truncated": info.truncated,
        }
        if fields["cost_usd"] is None and fields["cost_status"] == "estimated":
            fields["cost_status"] = "missing"
        tid = run.task.id
        reason = run.reason or run.task.stop_reason
        if reason is None and info.timed_out:
            reason = "timeout"
        if reason == "budget" and info.signal is None and info.exit_code == 0 and parser.cost_usd is not None:
            reason = None  # it finished (result line, exit 0) before the stop reached it: not "stopped"
        if info.finished_at and _is_time(info.finished_at):
            fields["finished_at"] = info.finished_at  # the runner's own clock: it may have ended while we were away
        try:
            if reason == "stop":
                fields.pop("finished_at", None)
                done = self.store.mark_interrupted(tid, finished_at=None, error="service stopped while running",
                                                   **fields)
            elif reason == "cancel":
                done = self.store.mark_finished(tid, TaskState.cancelled, error="cancelled", **fields)
            elif reason == "timeout":
                done = self.store.mark_finished(tid, TaskState.timeout, error=f"timed out after {run.timeout:g}s"
                                         if run.timeout else "timed out", **fields)
            elif reason == "budget":
                cost = parser.running_cost()
                lim = run.budget if run.budget is not None else run.task.max_budget_usd
                done = self.store.mark_finished(tid, TaskState.failed, error=(
                    f"stopped: its cost ${cost or 0:.4f} passed its budget ${lim or 0:g}"), **fields)
            elif info.exit_code == 0 and not parser.is_error:
                done = self.store.mark_finished(tid, TaskState.completed, **fields)
            else:
                if info.error and info.exit_code in (None, 127) and info.signal is None:
                    err = info.error
                elif parser.is_error:
                    err = f"agent reported {parser.result_subtype or 'error'}"
                elif info.signal is not None:
                    err = f"killed by {_signame(info.signal)}"
                else:
                    err = f"exit code {info.exit_code}"
                done = self.store.mark_finished(tid, TaskState.failed, error=err[:500], **fields)
            if done is not None and self.on_cost is not None:
                self._safe(self.on_cost, done, done.cost_usd)  # charge the final cost to the budgets
        except StoreError as e:
            # The row stays 'running'; the next start's recovery settles it (the exit record stays).
            log.error("task %s: could not record its outcome: %s", tid, e)
            self._emit("task.store_error", run.task.project, {"id": tid, "error": str(e)})
            raise

    async def _terminate(self, run: _Run, reason: str, *, force: bool = False) -> None:
        """Ask the executor to stop the run (SIGTERM, SIGKILL after ``kill_grace_s``); the reason
        is persisted first so the outcome is right even across a restart.  Idempotent."""
        if run.reason is not None and not force and run.reason != reason:
            return
        run.reason = run.reason or reason
        if run.handle is None:
            return  # not launched yet: checked right after the launch
        try:
            self.store.set_stop_reason(run.task.id, run.reason)
        except StoreError as e:
            log.error("task %s: could not persist the stop reason: %s", run.task.id, e)
        try:
            await run.executor.cancel(run.handle, grace_s=self.kill_grace_s)
        except ExecutorError as e:
            log.error("task %s: cannot stop it: %s", run.task.id, e)

    # -- re-adoption -------------------------------------------------------------------------

    async def _readopt(self) -> list[Task]:
        """Find every run a previous life left: adopt live ones, record finished ones with their
        real result, re-queue attempts that never started; legacy rows get the old recovery."""
        rows = self.store.running()
        legacy: list[Task] = []
        by_exec: dict[str, list[Task]] = {}
        for t in rows:
            if t.state is TaskState.running and t.executor and t.executor in self.executors:
                by_exec.setdefault(t.executor, []).append(t)
            else:
                legacy.append(t)
        settled: list[Task] = []
        adopt: list[tuple[_Run, Probe]] = []
        for name, tasks in by_exec.items():
            ex = self.executors.get(name)
            refs = [RunRef(task_id=t.id, attempt=max(t.attempts, 1), log_path=t.log_path or "", handle=t.handle)
                    for t in tasks]
            try:
                probes = await ex.poll(refs)
            except ExecutorError as e:
                log.error("executor %s cannot look for its runs: %s", name, e)
                continue
            lost: list[Task] = []
            for t in tasks:
                pr = probes.get(t.id)
                if pr is None or pr.state == "lost":
                    if pr is not None and pr.exit is not None and pr.exit.error:
                        log.warning("task %s: %s", t.id, pr.exit.error, extra={"TASK_ID": t.id})
                    lost.append(t)
                elif pr.state == "never_started":
                    done = self.store.requeue_unstarted(t.id)
                    log.warning("task %s: its launch was cut short before it started: queued again", t.id)
                    if done is not None:
                        settled.append(done)
                else:
                    run = _Run(t, ex)
                    run.handle = pr.handle or t.handle
                    run.adopted = True
                    run.reason = t.stop_reason
                    run.budget = t.max_budget_usd
                    try:
                        prof = self._profile(t.agent, t.project)
                        self._prices(run, prof)
                        if run.budget is None:
                            run.budget = prof.max_budget_usd
                        run.timeout = self._timeout_for(t, prof)
                    except Exception:
                        pass
                    adopt.append((run, pr))
            if lost:
                settled += self.store.recover(self._retry_for, retry_for_task=self._retry_for_task,
                                              kill_orphan=lambda _pid, _ident: False, tasks=lost)
        if legacy:
            settled += self.store.recover(self._retry_for, retry_for_task=self._retry_for_task, tasks=legacy)
        if adopt:
            live = [(r.task.id, r.handle or {}) for r, pr in adopt if pr.state == "running"]
            marked = {t.id: t for t in self.store.mark_adopted(live)} if live else {}
            loop = asyncio.get_running_loop()
            for run, pr in adopt:
                run.task = marked.get(run.task.id, run.task)
                self._runs[run.task.id] = run
                run.job = loop.create_task(self._run(run, probe=pr), name=f"aiwg-task-{run.task.id}")
            n = len(live)
            if n:
                log.info("re-adopted %d running agent(s)", n)
        return settled

    # -- helpers ----------------------------------------------------------------------------

    def _emit(self, event: str, project: str | None, data: dict[str, Any]) -> None:
        if self.emit is None:
            return
        try:
            self.emit(event, project, data)
        except Exception:
            log.exception("event handler failed for %s", event)

    @staticmethod
    def _safe(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # an observer must never stop the follower
            log.exception("observer %r failed", fn)


def _is_time(s: str) -> bool:
    try:
        parse_time(s)
    except ValueError:
        return False
    return True


def _signame(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
