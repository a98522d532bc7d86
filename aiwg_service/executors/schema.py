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

import re
import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "ExecutorConfig",
    "LocalExecutorConfig",
    "SlurmExecutorConfig",
    "SshExecutorConfig",
    "check_executors",
    "executor_problems",
    "parse_executors",
]

ExecutorName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
PosInt = Annotated[int, Meta(ge=1)]
#: Slurm's --mem: a number with an optional K/M/G/T suffix.
SyncMode = Literal["none", "git-push"]
SystemdMode = Literal["auto", "yes", "no"]
SLURM_MEM_PATTERN = r"^[0-9]+[KMGT]?$"
SlurmMem = Annotated[str, Meta(pattern=SLURM_MEM_PATTERN)]


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
    #: While jobs run, how often their logs are checked for growth that inotify cannot see (NFS written
    #: by another node); 0 turns it off (the output then shows when the job ends).
    log_poll_seconds: Annotated[float, Meta(ge=0, le=600)] = 2.0


class SshExecutorConfig(Struct, kw_only=True, forbid_unknown_fields=True, tag="ssh", tag_field="kind"):
    """A host from ``~/.ssh/config``; tasks run in the project's checkout at ``remote_path``."""

    host: Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\s/]+$")]
    #: The checkout on the host; ``{name}`` is the project directory's name. Default: the same path as here.
    remote_path: str | None = None
    #: ``git-push``: push the current commit to the remote checkout before each task.
    sync: SyncMode = "none"
    #: Run remote tasks under ``systemd-run --user`` (``auto``: when the host has a user manager).
    systemd: SystemdMode = "auto"
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


KINDS = ("local", "slurm", "ssh")
_CHOICES = {"sync": typing.get_args(SyncMode), "systemd": typing.get_args(SystemdMode)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _msgspec_problem(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.cpus`" -> ("cpus", "expected `int`, got `str`")."""
    m = _AT.match(str(exc))
    msg, path = (m.group("msg"), m.group("path") or "") if m else (str(exc), "")
    path = path.lstrip(".").replace("[", ".").replace("]", "")
    missing = re.match(r"Object missing required field `(\w+)`", msg)
    if missing:
        return (f"{path}.{missing.group(1)}" if path else missing.group(1)), "is required"
    unknown = re.match(r"Object contains unknown field `(\w+)`", msg)
    if unknown:
        return (f"{path}.{unknown.group(1)}" if path else unknown.group(1)), "unknown key (a typo?)"
    if path == "kind" or msg.startswith("Invalid value"):
        return "kind", f"must be one of {', '.join(KINDS)}"
    if msg.startswith("Invalid enum value") and path in _CHOICES:
        return path, f"must be one of {', '.join(_CHOICES[path])}"
    if SLURM_MEM_PATTERN in msg:
        return path, 'must be a Slurm memory size like "4000", "8G" or "512M"'
    return path, msg[:1].lower() + msg[1:]


def parse_executors(raw: Any) -> tuple[dict[str, ExecutorConfig], list[tuple[str, str]]]:
    """The section's raw JSON -> typed configs by name, and (JSON path, problem) for every bad entry."""
    configs: dict[str, ExecutorConfig] = {}
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        return configs, [("executors", "must be an object of executor name -> settings")]
    for name, entry in raw.items():
        where = f"executors.{name}"
        if not _NAME.match(name):
            problems.append((where, "an executor name may use only letters, digits and _ . - "
                                    "(at most 64, starting with a letter or digit)"))
            continue
        if not isinstance(entry, dict):
            problems.append((where, "must be an object"))
            continue
        if "kind" not in entry:
            problems.append((f"{where}.kind", f"is required (one of {', '.join(KINDS)})"))
            continue
        try:
            cfg = _decoder(entry)
        except msgspec.ValidationError as e:
            path, msg = _msgspec_problem(e)
            problems.append((f"{where}.{path}" if path else where, msg))
            continue
        found = executor_problems(name, cfg)
        problems.extend((f"executors.{p}", m) for p, m in found)
        if not found:
            configs[name] = cfg
    return configs, problems


def _decoder(entry: dict[str, Any]) -> ExecutorConfig:
    return msgspec.convert(entry, ExecutorConfig)  # type: ignore[arg-type]


def check_executors(doc: Any) -> list[tuple[str, str]]:
    """Whole-document check: every entry converts, and every profile's ``executor`` exists."""
    raw = getattr(doc, "executors", None) or {}
    _configs, out = parse_executors(raw)
    known = {"local", *raw}
    for pname, profile in (getattr(doc, "agents", None) or {}).items():
        ex = getattr(profile, "executor", None)
        if ex is not None and ex not in known:
            out.append((f"agents.{pname}.executor",
                        f"unknown executor {ex!r} (known: {', '.join(sorted(known))})"))
    return out
