"""The ``executors`` config section: where tasks may run, by name.

```json
"executors": {
  "cluster": {"kind": "slurm", "partition": "short", "cpus": 4, "mem": "8G", "max_parallel": 20},
  "gpu-box": {"kind": "ssh", "host": "gpu-box", "remote_path": "/srv/src/{name}", "sync": "git-push"}
}
```

A profile or a task names one (``"executor": "cluster"``); ``local`` always exists (this machine) and
may be configured too, for its ``max_parallel``.  msgspec + stdlib only, so ``aiwgctl config check``
can load it without the executors themselves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

__all__ = [
    "ExecutorConfig",
    "LocalExecutorConfig",
    "SlurmExecutorConfig",
    "SshExecutorConfig",
    "check_executors",
    "executor_problems",
]

ExecutorName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
PosInt = Annotated[int, Meta(ge=1)]
#: Slurm's --mem: a number with an optional K/M/G/T suffix.
SlurmMem = Annotated[str, Meta(pattern=r"^[0-9]+[KMGT]?$")]


class LocalExecutorConfig(Struct, kw_only=True, forbid_unknown_fields=True, tag="local", tag_field="kind"):
    """This machine (systemd transient units or detached runners)."""

    max_parallel: Annotated[int, Meta(ge=1, le=1024)] | None = None


class SlurmExecutorConfig(Struct, kw_only=True, forbid_unknown_fields=True, tag="slurm", tag_field="kind"):
    """A Slurm cluster reached with its own client commands (``sbatch``, ``squeue``, ``scancel``)."""

    partition: str | None = None
    account: str | None = None
    cpus: Annotated[int, Meta(ge=1, le=4096)] | None = None
    mem: SlurmMem | None = None
    #: More ``sbatch`` options, passed as given (e.g. ``["--qos=low", "--gres=gpu:1"]``).
    extra_args: list[Annotated[str, Meta(pattern=r"^--?[A-Za-z]")]] = []
    #: Where the project's checkout is on the nodes; ``{name}`` is the project directory's name.
    #: Default: the same path as here (a shared filesystem).
    remote_path: str | None = None
    max_parallel: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    #: Interpreter on the nodes for the agent runner (stdlib only).
    python: str = "python3"
    #: ``--time`` for a task without a timeout of its own.
    default_time_minutes: Annotated[int, Meta(ge=1, le=525_600)] = 120
    #: squeue spacing: this soon after a change, growing to ``poll_max_seconds`` while nothing changes.
    poll_min_seconds: Annotated[float, Meta(ge=0.2, le=600)] = 3.0
    poll_max_seconds: Annotated[float, Meta(ge=0.2, le=3600)] = 30.0
    command_timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = 30.0


class SshExecutorConfig(Struct, kw_only=True, forbid_unknown_fields=True, tag="ssh", tag_field="kind"):
    """A host from ``~/.ssh/config``; tasks run in the project's checkout at ``remote_path``."""

    host: Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\s/]+$")]
    #: The checkout on the host; ``{name}`` is the project directory's name. Default: the same path as here.
    remote_path: str | None = None
    #: ``git-push``: push the current commit to the remote checkout before each task.
    sync: Literal["none", "git-push"] = "none"
    #: Run remote tasks under ``systemd-run --user`` (``auto``: when the host has a user manager).
    systemd: Literal["auto", "yes", "no"] = "auto"
    #: The ssh config to read ``host`` from (default ``~/.ssh/config``); known_hosts comes from it
    #: (``UserKnownHostsFile``), else ``~/.ssh/known_hosts``.  Unknown host keys are always refused.
    ssh_config: str | None = None
    max_parallel: Annotated[int, Meta(ge=1, le=1024)] | None = None
    python: str = "python3"
    #: Where run files and logs live on the host (relative to the remote home unless absolute).
    remote_state_dir: str = ".local/state/aiwg-remote"
    connect_timeout_seconds: Annotated[float, Meta(gt=0, le=600)] = 15.0
    keepalive_seconds: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    #: Reconnect backoff while the host is unreachable: doubles up to this.
    reconnect_max_seconds: Annotated[float, Meta(ge=1, le=3600)] = 60.0


ExecutorConfig = LocalExecutorConfig | SlurmExecutorConfig | SshExecutorConfig


def executor_problems(name: str, cfg: ExecutorConfig) -> list[tuple[str, str]]:
    """Checks beyond types, as (JSON path relative to the section, problem)."""
    out: list[tuple[str, str]] = []
    if name == "local" and not isinstance(cfg, LocalExecutorConfig):
        out.append((f"{name}.kind", "the name 'local' is this machine: it must have kind 'local'"))
    if isinstance(cfg, SlurmExecutorConfig) and cfg.poll_max_seconds < cfg.poll_min_seconds:
        out.append((f"{name}.poll_max_seconds", "must be >= poll_min_seconds"))
    if isinstance(cfg, SlurmExecutorConfig | SshExecutorConfig) and cfg.remote_path is not None:
        rp = cfg.remote_path
        if not rp.strip():
            out.append((f"{name}.remote_path", "must not be empty"))
        elif isinstance(cfg, SlurmExecutorConfig) and not rp.startswith("/"):
            out.append((f"{name}.remote_path", "must be an absolute path on the cluster's shared filesystem"))
    return out


def check_executors(doc: Any) -> list[tuple[str, str]]:
    """Whole-document check: the section's own problems, and every profile's ``executor`` must exist."""
    section = getattr(doc, "executors", None) or {}
    out = [(f"executors.{p}", msg) for name, cfg in section.items() for p, msg in executor_problems(name, cfg)]
    known = {"local", *section}
    for pname, profile in (getattr(doc, "agents", None) or {}).items():
        ex = getattr(profile, "executor", None)
        if ex is not None and ex not in known:
            out.append((f"agents.{pname}.executor",
                        f"unknown executor {ex!r} (known: {', '.join(sorted(known))})"))
    return out
