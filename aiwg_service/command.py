"""External commands with a deadline: a hung ``systemctl``, ``systemd-run``, ``git`` or ``tmux`` must never
hold a launch, a stop or a chat turn for good. On timeout the process (its whole group, when it leads one)
is killed and reaped, and ``CommandTimeout`` says which command and how long it had."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

#: systemctl / systemd-run / the runner's start: they answer in milliseconds unless the manager is stuck
SYSTEMD_TIMEOUT_S = 30.0
GIT_TIMEOUT_S = 60.0
TMUX_TIMEOUT_S = 15.0


class CommandTimeout(TimeoutError):
    pass


async def finish(proc: asyncio.subprocess.Process, timeout: float, what: str,
                 stdin: bytes | None = None) -> tuple[bytes, bytes]:
    """``proc.communicate()`` within ``timeout`` seconds, else kill, reap and raise ``CommandTimeout``."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await kill(proc)
        raise CommandTimeout(f"{what} did not finish within {timeout:g} s") from None
    return out or b"", err or b""


async def wait(proc: asyncio.subprocess.Process, timeout: float, what: str) -> int:
    """``proc.wait()`` within ``timeout`` seconds (output going to files), else kill, reap and raise."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        await kill(proc)
        raise CommandTimeout(f"{what} did not finish within {timeout:g} s") from None


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL (the group, when the process leads one), close our ends of its pipes, and reap it.

    The pipes are closed here because a child it left behind may hold them open, and before 3.12 asyncio's
    ``wait()`` returns only once every pipe has closed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:  # started with start_new_session: its children go too
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    transport = getattr(proc, "_transport", None)
    for fd in (0, 1, 2):
        pipe = transport.get_pipe_transport(fd) if transport is not None else None
        if pipe is not None:
            pipe.close()
    with contextlib.suppress(ProcessLookupError, TimeoutError):
        await asyncio.wait_for(proc.wait(), 5)
