"""The one small interface between the supervisor and *where* a task's process runs.

Why an interface: agents must outlive the service (a restart must not kill a 40-minute run), and
they may run elsewhere (a Slurm node, an SSH host).  The supervisor never spawns a process itself:
it hands a :class:`LaunchSpec` to an :class:`Executor`, stores the JSON :data:`Handle` it gets back
in the task row, and after a restart asks the executor to :meth:`~Executor.adopt` that handle.

Contract every executor keeps:

* **Output lands in ``spec.log_path``** (stdout and stderr, appended, in order), written by the
  executor's side, not piped through the service.  The supervisor follows that file (see
  ``follow.py``), so ``task logs -f`` sees every byte exactly once across service restarts.
* **The end of the stream is explicit**: :class:`ExitInfo.log_bytes` says how many bytes of the log
  belong to the run, so a follower knows when it has read everything.
* **The result is durable**: an agent that ends while the service is down is still reported by
  ``adopt`` with its real exit status (never "interrupted", never run again).
* **At most once**: ``adopt`` of a :class:`RunRef` whose handle is missing or partial (the service
  died between recording "running" and recording the handle) must find the run if it started, and
  otherwise make sure it never will start (``Probe.state == "never_started"``).
* Handles are plain JSON dicts with a ``kind`` key (``"local-unit"``, ``"local-runner"``,
  ``"slurm"``, ``"ssh"``...); an executor refuses kinds it does not own with :class:`ExecutorError`.

Everything here is msgspec + stdlib, so ``aiwgctl`` may import it cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from ..sandbox.policy import Policy

__all__ = [
    "Executor",
    "ExecutorError",
    "ExitInfo",
    "Handle",
    "LaunchError",
    "LaunchSpec",
    "Probe",
    "ProbeState",
    "RunRef",
]

#: What an executor returns from ``start``; persisted verbatim (JSON) in the task row.
Handle = dict[str, Any]


class ExecutorError(RuntimeError):
    """An executor could not do what was asked; the message is for users (no traceback)."""


class LaunchError(ExecutorError):
    """``start`` failed before anything ran (bad argv, unit name in use, host unreachable).

    ``started`` is False when the executor is sure nothing runs; the supervisor then fails the
    task with ``str(error)``."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


class LaunchSpec(msgspec.Struct, kw_only=True):
    """Everything needed to run one attempt of one task, independent of where it runs."""

    task_id: str
    #: 1-based attempt number (a re-queued task runs again with attempt + 1).
    attempt: int = 1
    argv: list[str]
    cwd: str
    #: The complete, already-sanitized environment of the agent (may hold secrets: never log it,
    #: never put it on a command line or in unit properties).
    env: dict[str, str]
    log_path: str
    #: What the agent reads on stdin (the prompt, for agents that take it there): any size, where argv
    #: words stop at 128 KiB.  None: /dev/null.
    stdin: str | None = None
    #: Wall-clock limit; the executor enforces it even while the service is down.
    timeout_s: float | None = None
    #: systemd-style limits from the profile ("4G", "200%"); executors map them as they can.
    memory_max: str | None = None
    cpu_quota: str | None = None
    #: umask for the agent (agents create normal files in project trees).
    umask: int | None = 0o022
    #: Log cap: output past it is read and discarded (never blocks the agent).
    max_output_bytes: int = 10 * 1024 * 1024
    #: SIGTERM -> SIGKILL grace for cancel/timeout.
    kill_grace_s: float = 5.0
    profile: str = ""
    project: str = ""
    #: Executor-specific settings from the profile (e.g. ``{"host": ...}`` for ssh,
    #: ``{"partition": ...}`` for slurm).  The local executor ignores it.
    options: dict[str, Any] = {}
    #: The resolved confinement (``sandbox.resolve``); None: not confined (remote executors, direct use).
    sandbox: Policy | None = None


class ExitInfo(msgspec.Struct, kw_only=True):
    """How a run ended, as the executor recorded it (durably, where it ran)."""

    exit_code: int | None = None
    #: Terminating signal number, if the agent was killed by one.
    signal: int | None = None
    #: The executor's own wall-clock limit stopped it.
    timed_out: bool = False
    #: The log file's size when the stream ended (earlier attempts may precede this run's output
    #: in the same file); a follower has read everything once it reaches it.  None if unknown.
    log_bytes: int | None = None
    #: Output past ``max_output_bytes`` was discarded.
    truncated: bool = False
    #: When truncated: the last whole lines of the discarded output (up to 64 KiB), so the
    #: stream's final result line (session, cost) is not lost with it.
    stream_tail: str | None = None
    #: ISO-8601 UTC end time, when known.
    finished_at: str | None = None
    #: Set when the executor lost the run (runner killed, node died): the outcome is unknown.
    error: str | None = None


ProbeState = Literal["running", "finished", "never_started", "lost"]


class Probe(msgspec.Struct, kw_only=True):
    """What ``adopt``/``poll`` found for one run.

    * ``running``: alive; ``handle`` is the complete handle to keep using (may be richer than the
      one passed in, e.g. after the crash window).
    * ``finished``: it ended (maybe while the service was down); ``exit`` says how.
    * ``never_started``: it did not start and now never will; the task may be queued again.
    * ``lost``: it may have run but no result can be found; ``exit.error`` says why.
    """

    state: ProbeState
    handle: Handle | None = None
    #: Offset in the log where this run's output starts (to re-parse its stream after a restart).
    log_start: int | None = None
    exit: ExitInfo | None = None


class RunRef(msgspec.Struct, kw_only=True):
    """What the supervisor knows about a run from the task row (enough to find it again)."""

    task_id: str
    attempt: int = 1
    log_path: str
    #: None or partial when the service died inside ``start``.
    handle: Handle | None = None


@runtime_checkable
class Executor(Protocol):
    """Where tasks run.  All methods run on the service's event loop and must not block it."""

    #: Config name used for routing (``agents.<profile>.executor``, default ``"local"``).
    name: str

    async def start(self, spec: LaunchSpec) -> Handle:
        """Launch one attempt; return once it is running (or raise :class:`LaunchError`).

        The run must keep going if the service exits after this returns."""
        ...

    async def adopt(self, ref: RunRef) -> Probe:
        """After a restart: find the run ``ref`` describes (see the at-most-once rule above)."""
        ...

    async def poll(self, refs: Sequence[RunRef]) -> dict[str, Probe]:
        """Batch form of :meth:`adopt`, keyed by task id (one query for many runs, e.g. one
        ``systemctl show`` or one ``squeue`` for 100 agents)."""
        ...

    async def wait(self, handle: Handle) -> ExitInfo:
        """Until the run ends; its recorded :class:`ExitInfo`.  Cancelling the awaiting asyncio
        task only stops waiting, never the run."""
        ...

    async def cancel(self, handle: Handle, *, grace_s: float = 5.0) -> None:
        """Ask the run to stop: SIGTERM the agent and everything it spawned, SIGKILL after
        ``grace_s``.  Returns at once; :meth:`wait` reports the end.  Idempotent."""
        ...

    async def forget(self, handle: Handle) -> None:
        """The outcome is recorded in the task store: drop what was kept for the run (exit records,
        claims, finished units).  Called once per finished run; never stops a live one."""
        ...

    async def close(self) -> None:
        """Release the executor's own resources (watches, connections).  Never stops runs."""
        ...
