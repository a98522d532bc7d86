"""What the remote executors (slurm, ssh) share: the "not reachable now" error, the runner's spec and its
exit record."""

from __future__ import annotations

import marshal
from collections.abc import Mapping
from typing import Any

from .base import ExecutorError, ExitInfo

__all__ = ["ExecutorUnavailable", "exit_info", "spec_bytes"]


class ExecutorUnavailable(ExecutorError):
    """The executor cannot be reached right now (slurmctld not answering, ssh host down or refusing us).

    Raised by ``start`` (and by ``adopt`` when it must ask the remote side and has no handle): the
    task stays queued with this message as its reason; nothing ran.  Not a :class:`LaunchError`,
    which fails the task."""


def exit_info(d: Mapping[str, Any]) -> ExitInfo:
    """An exit record written by ``runner.py`` -> :class:`ExitInfo`."""

    def num(key: str) -> int | None:
        v = d.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def text(key: str) -> str | None:
        v = d.get(key)
        return v if isinstance(v, str) else None

    return ExitInfo(exit_code=num("exit_code"), signal=num("signal"), timed_out=bool(d.get("timed_out")),
                    log_bytes=num("log_bytes"), truncated=bool(d.get("truncated")),
                    finished_at=text("finished_at"), error=text("error"))


def spec_bytes(record: dict[str, Any]) -> bytes:
    """The runner's spec as marshal format 2, which every Python 3 reads: the interpreter on the nodes
    or the host need not be the service's."""
    return marshal.dumps(record, 2)
