"""Runs queued tasks as child process groups under service-wide and per-project limits.

Event-driven: the scheduler runs only when something changes (submit, a run
ending, start, a cancel) via :meth:`Supervisor.wake`; nothing polls.  Each run
is its own session/process group so timeout, cancel and stop can signal the
agent *and* everything it spawned; the slot is released only once the leader
has been reaped and its group swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .agents import (
    StreamJsonParser,
    build_argv,
    child_env,
    proc_identity,
    process_umask,
    systemd_scope_argv,
    umask_argv,
)
from .model import AgentProfile, Emit, Task, TaskSource, TaskState
from .store import Store, StoreError

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_TAIL = 4000  # bytes of raw output kept as the result of agents that do not speak stream-json


class _Run:
    """In-memory state of one task from pick to reap."""

    __slots__ = ("job", "kill_handle", "proc", "reason", "task", "term_sent", "timer")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.proc: asyncio.subprocess.Process | None = None
        self.job: asyncio.Task[None] | None = None
        self.reason: str | None = None  # None | "timeout" | "cancel" | "stop"
        self.term_sent = False
        self.timer: asyncio.TimerHandle | None = None
        self.kill_handle: asyncio.TimerHandle | None = None


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
    ) -> None:
        """``project_profiles(agent, project)``, when given, resolves profiles instead of ``profiles``
        (a project may override service-wide profiles).  ``default_timeout_s`` may be a function of
        the project.  ``child_umask`` is the umask agents run with (see :func:`umask_argv`).
        ``on_output(task_id, data)`` sees every byte appended to a task's log, as it is written
        (``task.logs`` followers hang off it: no polling of the log file)."""
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
        #: Pause before trying the queue again after a failed store write (disk full).
        self.store_retry_s = 5.0
        self._runs: dict[str, _Run] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._stopping = False
        self._wake_pending = False
        self._idle = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> list[Task]:
        """Recover what a previous life left running (see :meth:`Store.recover`), then schedule.

        Returns the recovered tasks."""
        self._loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        recovered = self.store.recover(self._retry_for, retry_for_task=self._retry_for_task)
        self._started = True
        self._stopping = False
        self.wake()
        return recovered

    async def stop(self, grace_s: float = 10.0) -> None:
        """Start nothing new; let running tasks finish for ``grace_s``, then SIGTERM (SIGKILL after
        ``kill_grace_s``) their groups and record them ``interrupted``: the next :meth:`start`
        re-queues them per the profile's ``retry``."""
        self._stopping = True
        jobs = [r.job for r in self._runs.values() if r.job is not None]
        if not jobs:
            return
        if grace_s > 0:
            await asyncio.wait(jobs, timeout=grace_s)
        for run in list(self._runs.values()):
            self._terminate(run, "stop")
        await asyncio.gather(*jobs, return_exceptions=True)

    # -- API ------------------------------------------------------------------------------

    def submit(self, project: str, prompt: str, *, agent: str = "claude", priority: int = 0,
               source: TaskSource | str = TaskSource.cli, timeout_s: float | None = None,
               subagent: str | None = None) -> Task:
        """Queue a task (raises KeyError for an unknown agent, StoreError if it could not be
        stored) and wake the scheduler."""
        self._profile(agent, project)
        task = self.store.submit(project, prompt, agent=agent, priority=priority, source=source,
                                 timeout_s=timeout_s, subagent=subagent)
        self._idle.clear()
        self.wake()
        return task

    def cancel(self, task_id: str) -> bool:
        """Cancel a queued task at once, or a running one (group SIGTERM, SIGKILL after grace;
        it becomes ``cancelled`` when it has exited).  False if it is neither."""
        run = self._runs.get(task_id)
        if run is not None:
            if run.reason in (None, "cancel"):
                self._terminate(run, "cancel")
                return True
            return False
        return self.store.cancel_queued(task_id) is not None

    def wake(self) -> None:
        """Ask for a scheduling pass soon (coalesced; cheap to call often)."""
        if self._loop is None or self._wake_pending:
            return
        self._wake_pending = True
        self._loop.call_soon(self._schedule)

    @property
    def running(self) -> dict[str, Task]:
        return {tid: r.task for tid, r in self._runs.items()}

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

    def _schedule(self) -> None:
        self._wake_pending = False
        if not self._started or self._stopping:
            return
        per_project = Counter(r.task.project for r in self._runs.values())
        excluded: set[str] = set()
        for p, n in per_project.items():
            lim = self._limit(p)
            if lim is not None and n >= lim:
                excluded.add(p)
        while len(self._runs) < self.max_parallel:
            try:
                task = self.store.next_queued(excluded, self._runs.keys())
            except Exception as e:  # closed or corrupt db: nothing to start
                log.error("cannot read the queue: %s", e)
                break
            if task is None:
                break
            lim = self._limit(task.project)
            if lim is not None and per_project[task.project] >= lim:
                excluded.add(task.project)
                continue
            per_project[task.project] += 1
            if lim is not None and per_project[task.project] >= lim:
                excluded.add(task.project)
            run = _Run(task)
            self._runs[task.id] = run
            run.job = asyncio.get_running_loop().create_task(self._run(run), name=f"aiwg-task-{task.id}")
        if not self._runs:
            self._idle.set()

    # -- one run ---------------------------------------------------------------------------

    def _timeout_for(self, task: Task, profile: AgentProfile) -> float:
        if task.timeout_s:
            return task.timeout_s
        if profile.timeout_minutes:
            return profile.timeout_minutes * 60.0
        if callable(self.default_timeout_s):
            return self.default_timeout_s(task.project)
        return self.default_timeout_s

    async def _run(self, run: _Run) -> None:
        store_failed = False
        try:
            await self._run_inner(run)
        except StoreError as e:
            # e.g. disk full: the task stays queued; retry after a pause rather than spin on it.
            store_failed = True
            log.error("task %s: store write failed: %s", run.task.id, e)
            self._emit("task.store_error", run.task.project, {"id": run.task.id, "error": str(e)})
        except Exception:
            log.exception("task %s: supervisor error", run.task.id)
        finally:
            for h in (run.timer, run.kill_handle):
                if h is not None:
                    h.cancel()
            self._runs.pop(run.task.id, None)
            if not self._stopping:
                if store_failed and self._loop is not None:
                    self._loop.call_later(self.store_retry_s, self.wake)
                else:
                    self.wake()
            if not self._runs:
                self._idle.set()

    async def _run_inner(self, run: _Run) -> None:
        task = run.task
        try:
            profile = self._profile(task.agent, task.project)
        except Exception as e:
            self.store.fail_queued(task.id, f"unknown agent profile {task.agent!r}: {e}")
            return
        argv = build_argv(profile, task.prompt, task.subagent)
        env = child_env(profile, task.id, systemd=self.use_systemd_scope)
        if self.child_umask is not None and self.child_umask != process_umask():
            # Resolve here so "no such agent" stays a spawn error, not an exit 127 of the wrapper.
            exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
            if exe is None:
                self.store.fail_queued(task.id, f"cannot start agent {argv[0]!r}: not found on PATH")
                return
            argv = umask_argv([exe, *argv[1:]], self.child_umask)
        if self.use_systemd_scope:
            argv = systemd_scope_argv(task.id, profile, argv)
        log_path = self.log_dir / f"{task.id}.log"
        timeout = self._timeout_for(task, profile)
        if self._stopping or run.reason is not None:
            if run.reason == "cancel":
                self.store.cancel_queued(task.id)
            return
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            logf: BinaryIO = open(fd, "ab", buffering=0)  # noqa: SIM115 - closed in finally below
        except OSError as e:
            self.store.fail_queued(task.id, f"cannot open log {log_path}: {e}")
            return
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT, cwd=task.project, env=env, start_new_session=True)
            except OSError as e:
                self.store.fail_queued(task.id, f"cannot start agent {argv[0]!r}: {e}")
                return
            run.proc = proc
            try:
                started = self.store.mark_started(task.id, pid=proc.pid, pid_start=proc_identity(proc.pid),
                                                  log_path=str(log_path))
            except StoreError:
                # Not recorded as running, so it must not run: kill it before anyone depends on it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                raise
            if started is None:  # no longer queued (cancelled behind our back): do not run it
                run.reason = run.reason or "cancel"
            else:
                run.task = started
            loop = asyncio.get_running_loop()
            run.timer = loop.call_later(timeout, self._terminate, run, "timeout")
            if run.reason is not None:
                self._terminate(run, run.reason)
            await self._supervise(run, proc, logf, profile, timeout, started is not None)
        finally:
            logf.close()

    async def _supervise(self, run: _Run, proc: asyncio.subprocess.Process, logf: BinaryIO,
                         profile: AgentProfile, timeout: float, record: bool) -> None:
        parser = StreamJsonParser()
        state: dict[str, Any] = {"truncated": False, "tail": bytearray()}
        assert proc.stdout is not None
        pump = asyncio.get_running_loop().create_task(
            self._pump(run, proc.stdout, logf, parser, profile.max_output_mb * 1024 * 1024, state))
        rc = await proc.wait()
        if run.timer is not None:
            run.timer.cancel()
        if run.kill_handle is not None:
            run.kill_handle.cancel()
        # The leader is gone: whatever is left of its group (grandchildren) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(pump), self.drain_timeout_s)
        except TimeoutError:  # something outside the group still holds the pipe
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            with contextlib.suppress(OSError):
                self._log_write(run, logf, b"\n[aiwg: output still open after the agent exited; stopped reading]\n")
        parser.close()
        if record:
            self._record(run, rc, parser, state, timeout)

    async def _pump(self, run: _Run, stream: asyncio.StreamReader, logf: BinaryIO, parser: StreamJsonParser,
                    cap: int, state: dict[str, Any]) -> None:
        """Copy output to the log (up to ``cap`` bytes, then only drain) and into the parser."""
        written = 0
        tail: bytearray = state["tail"]
        had_session = False
        while True:
            chunk = await stream.read(1 << 16)
            if not chunk:
                return
            parser.feed(chunk)
            tail += chunk
            if len(tail) > 2 * _TAIL:
                del tail[:-_TAIL]
            if not state["truncated"]:
                room = cap - written
                try:
                    if len(chunk) <= room:
                        self._log_write(run, logf, chunk)
                        written += len(chunk)
                    else:
                        self._log_write(run, logf, chunk[:room])
                        written = cap
                        state["truncated"] = True
                        self._log_write(run, logf, f"\n[aiwg: output truncated at {cap // (1024 * 1024)} MB; "
                                        f"the rest was read and discarded]\n".encode())
                except OSError as e:  # e.g. ENOSPC: keep draining so the agent never blocks on the pipe
                    state["truncated"] = True
                    log.warning("task %s: log write failed, output no longer logged: %s", run.task.id, e)
            if not had_session and parser.session_id:
                had_session = True
                self._emit("task.session", run.task.project,
                           {"id": run.task.id, "session_id": parser.session_id, "model": parser.model})

    def _log_write(self, run: _Run, logf: BinaryIO, data: bytes) -> None:
        """Append to the log, then tell ``on_output`` (only what really reached the file)."""
        logf.write(data)
        if self.on_output is not None and data:
            try:
                self.on_output(run.task.id, data)
            except Exception:  # an observer must never stop the pump
                log.exception("output observer failed for %s", run.task.id)

    def _record(self, run: _Run, rc: int, parser: StreamJsonParser, state: dict[str, Any],
                timeout: float) -> None:
        usage = parser.total_usage()
        summary = parser.summary()
        if summary is None and parser.json_lines == 0 and state["tail"]:
            summary = bytes(state["tail"][-_TAIL:]).decode("utf-8", "replace").strip() or None
        fields: dict[str, Any] = {
            "exit_code": rc if rc >= 0 else None,
            "signal": -rc if rc < 0 else None,
            "session_id": parser.session_id,
            "cost_usd": parser.cost_usd,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cache_creation_tokens": usage.cache_creation_input_tokens if usage else None,
            "cache_read_tokens": usage.cache_read_input_tokens if usage else None,
            "num_turns": parser.num_turns,
            "result": summary,
            "output_truncated": state["truncated"],
        }
        tid = run.task.id
        try:
            if run.reason == "stop":
                self.store.mark_interrupted(tid, finished_at=None, error="service stopped while running",
                                            **fields)
            elif run.reason == "cancel":
                self.store.mark_finished(tid, TaskState.cancelled, error="cancelled", **fields)
            elif run.reason == "timeout":
                self.store.mark_finished(tid, TaskState.timeout, error=f"timed out after {timeout:g}s",
                                         **fields)
            elif rc == 0 and not parser.is_error:
                self.store.mark_finished(tid, TaskState.completed, **fields)
            else:
                if parser.is_error:
                    err = f"agent reported {parser.result_subtype or 'error'}"
                elif rc < 0:
                    err = f"killed by {_signame(-rc)}"
                else:
                    err = f"exit code {rc}"
                self.store.mark_finished(tid, TaskState.failed, error=err, **fields)
        except StoreError as e:
            # The row stays 'running'; the next start's recovery settles it.
            log.error("task %s: could not record its outcome: %s", tid, e)
            self._emit("task.store_error", run.task.project, {"id": tid, "error": str(e)})

    def _emit(self, event: str, project: str | None, data: dict[str, Any]) -> None:
        if self.emit is None:
            return
        try:
            self.emit(event, project, data)
        except Exception:
            log.exception("event handler failed for %s", event)

    def _terminate(self, run: _Run, reason: str) -> None:
        """SIGTERM the run's group now, SIGKILL it after ``kill_grace_s``.  Idempotent."""
        if run.reason is None:
            run.reason = reason
        proc = run.proc
        if proc is None or proc.returncode is not None or run.term_sent:
            return  # not spawned yet (checked right after spawn) or already on its way out
        run.term_sent = True
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        run.kill_handle = loop.call_later(self.kill_grace_s, _killpg_quiet, proc)


def _killpg_quiet(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
