"""The exec-first start of a local run: the agent is exec'd before any Python starts.

Why: starting a Python runner per task and letting *it* start the agent put an interpreter's start-up
(15-50 ms on a loaded machine) between ``task.submit`` and the agent.  Here a tiny ``/bin/sh`` script
(:data:`SCRIPT`, fork+exec of dash: about a millisecond) does only what durability needs before the
agent runs, then becomes the runner:

1. claims the attempt (``<run>.claim`` created with ``set -C``, i.e. ``O_EXCL``: the same at-most-once
   race with recovery the runner has), recording its own pid and start time (the runner keeps that pid);
2. opens ``<run>.fifo`` read-write on fd 3 (never blocks) and the prompt (``<run>.stdin``) on fd 4;
3. sources ``<run>.sh`` (0600: the agent's env, cwd, umask and argv, written by :func:`script_for`) and
   forks a *waiter* subshell (a fork, no exec) that starts the agent through ``setsid`` (its own session
   and process group; output on fd 3), writes its pid to ``<run>.child``, waits for it and writes its
   status to ``<run>.rc``.  (dash reaps finished children eagerly, so an agent that ended before the
   runner came up would lose its status if the runner had to ``waitpid`` it itself.)
4. ``exec``\\ s ``runner.py --waiter=PID``: it reads the fifo, keeps the cap, the deadline and the stop
   (signals to the agent's group), takes the status from ``<run>.rc`` when the waiter ends, and writes
   ``<run>.exit`` exactly as when it starts the agent itself.  An exit status above 128 from ``<run>.rc``
   is read as death by signal (status - 128), as shells report it.

The runner's interpreter now starts *beside* the agent (its output waits in the fifo meanwhile).

The env never appears on a command line or in unit properties: in the foreground the shim is spawned
with the agent's env as its own; under systemd the unit's env (the user manager's) is cleared by the
sourced file before it exports the agent's.

The seam for confinement (issue #27): ``prefix`` (argv words put before the agent, e.g. ``bwrap ...``) is
an argument of :func:`script_for`; unit properties go through ``LocalExecutor.unit_argv``'s
``properties``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

__all__ = ["SCRIPT", "script_for", "shell_ok", "write_private"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: ``sh SHIM RUN PYTHON RUNNER SETSID`` (SHIM: this text in a file, so no unit property has to quote it).
#: Only builtins until the agent's exec (read, printf, set, exec, ``.``).
SCRIPT = r"""__b=$1 __py=$2 __r=$3 __ss=$4 __u=${AIWG_UNIT-}
read -r __boot < /proc/sys/kernel/random/boot_id || exit 1
read -r __st < /proc/$$/stat || exit 1
__st=${__st##*) }
set -f
set -- $__st
__st=${20}
if [ -n "$__u" ]; then __uj="\"$__u\""; else __uj=null; fi
set -C
{ printf '{"by": "runner", "pid": %s, "ident": "%s:%s", "unit": %s}' $$ "$__boot" "$__st" "$__uj" \
    > "$__b.claim"; } 2>/dev/null || exit 75
set +C
exec 3<>"$__b.fifo" || exit 1
__in=/dev/null
. "$__b.sh" || exit 1
exec 4<"$__in" || exit 1
(
  "$__ss" "$@" <&4 >&3 2>&3 3>&- 4>&- &
  printf '%s' $! > "$__b.child"
  exec 3>&- 4>&- </dev/null
  wait $!
  printf '%s' $? > "$__b.rc"
) &
exec "$__py" -I -S "$__r" --waiter=$! --unit="$__u" "$__b.spec" <&- 4<&-
"""


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def shell_ok(env: Mapping[str, str]) -> bool:
    """Can a shell export every one of these names (identifiers only)?"""
    return all(_NAME.match(k) and not k.startswith("__") for k in env)


def script_for(*, argv: Sequence[str], env: Mapping[str, str], cwd: str, umask: int | None,
               stdin_path: str | None, clear_env: bool, prefix: Sequence[str] = ()) -> str:
    """The per-run file the shim sources: the agent's env (after clearing the inherited one when
    ``clear_env``), cwd, umask, stdin path and argv (``prefix`` first: a confinement wrapper)."""
    lines = []
    if clear_env:  # the user manager's env (and anything set in it) is not the agent's
        lines.append("for __n in $(export -p | while IFS= read -r __l; do case $__l in "
                     "'export '[A-Za-z_]*) __l=${__l#export }; printf '%s\\n' \"${__l%%=*}\";; esac; done); "
                     "do unset \"$__n\" 2>/dev/null; done")
    lines += [f"export {k}={_q(v)}" for k, v in env.items()]
    lines.append(f"cd {_q(cwd)} || exit 1")
    if umask is not None:
        lines.append(f"umask {umask:03o}")
    if stdin_path is not None:
        lines.append(f"__in={_q(stdin_path)}")
    lines.append("set -- " + " ".join(_q(a) for a in [*prefix, *argv]))
    return "\n".join(lines) + "\n"


def write_private(path: str, data: bytes) -> None:
    """A new 0600 file (the run directory is 0700), not fsynced: it only has to reach the shim."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
