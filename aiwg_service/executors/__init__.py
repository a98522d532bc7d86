"""Where a task's process runs: the :class:`~.base.Executor` interface and its implementations.

``local`` (``local.py``): a transient systemd user unit per task when a user manager is reachable,
else a small detached runner (``runner.py``).  Other executors (Slurm, SSH) implement the same
interface; the supervisor routes by name through :class:`~.registry.Executors`.
"""

from .base import (
    Executor,
    ExecutorError,
    ExitInfo,
    Handle,
    LaunchError,
    LaunchSpec,
    Probe,
    ProbeState,
    RunRef,
)

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
