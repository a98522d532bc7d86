"""tmux through its command line, on the service's private socket.

Every call is ``create_subprocess_exec("tmux", "-S", SOCKET, ...)``: no shell ever sees user text.
Sessions are addressed as ``=NAME`` (exact match: ``aiwg`` never means ``aiwg-t-123``).  When the
service runs under systemd, the tmux server is started inside its own transient scope
(``systemd-run --user --scope --collect``), so a restart of the service, which kills the service's
cgroup, leaves every tmux session alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import command
from ..systemd import user_manager_reachable

__all__ = ["Pane", "Tmux", "TmuxError", "TmuxMissing", "scope_available"]


class TmuxError(RuntimeError):
    """tmux refused; the message is tmux's own."""


class TmuxMissing(TmuxError):
    def __init__(self) -> None:
        super().__init__("tmux is not installed: install it (Debian/Ubuntu: `sudo apt-get install tmux`)")


def scope_available(environ: Mapping[str, str] | None = None) -> bool:
    """Running as a systemd unit with a user manager reachable: new tmux servers get their own scope."""
    return user_manager_reachable(environ)


def _unblock_sigchld() -> None:
    """A tmux server keeps the signal mask of the client that started it, and a server with SIGCHLD blocked
    never reaps its panes (no exit status, no ``pane-died``).  The loop's spawn hands children the mask of
    this thread, which may still be the one the service inherited (a shell or a test runner can block
    SIGCHLD), so make sure it is unblocked first."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


class Pane:
    """What ``display-message`` says of a session's first pane."""

    def __init__(self, dead: bool, status: int | None, pid: int | None, command: str) -> None:
        self.dead = dead
        self.status = status
        self.pid = pid
        self.command = command


class Tmux:
    def __init__(self, socket: Path, *, use_scope: bool = False, env: Mapping[str, str] | None = None) -> None:
        """``env`` is what tmux runs with, so what a server it starts hands to every pane (keep it clean)."""
        self.socket = socket
        self.use_scope = use_scope
        self.env = dict(env) if env is not None else None

    def argv(self, *args: str) -> list[str]:
        return ["tmux", "-S", str(self.socket), *args]

    async def run(self, *args: str, check: bool = True, prefix: Sequence[str] = ()) -> str:
        if shutil.which("tmux") is None:
            raise TmuxMissing()
        _unblock_sigchld()
        # Output goes through files, not pipes: a tmux server this call starts may keep the inherited
        # descriptors (it does under uvloop), and a pipe would then never reach EOF.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = await asyncio.create_subprocess_exec(
                *prefix, *self.argv(*args), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, env=self.env)
            try:
                rc = await command.wait(proc, command.TMUX_TIMEOUT_S, f"tmux {args[0] if args else ''}")
            except command.CommandTimeout as e:
                raise TmuxError(str(e)) from None
            out.seek(0)
            err.seek(0)
            text, problem = out.read().decode(errors="replace"), err.read().decode(errors="replace").strip()
        if check and rc != 0:
            raise TmuxError(problem or f"tmux {args[0]} failed ({rc})")
        return text

    async def server_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            await self.run("list-sessions", "-F", "#{session_name}")
        except TmuxMissing:
            raise
        except TmuxError:
            return False
        return True

    async def sessions(self) -> list[str]:
        if not await self.server_running():
            return []
        return [s for s in (await self.run("list-sessions", "-F", "#{session_name}")).splitlines() if s]

    async def has_session(self, name: str) -> bool:
        if not await self.server_running():
            return False
        try:
            await self.run("has-session", "-t", f"={name}")
        except TmuxError:
            return False
        return True

    async def new_session(self, name: str, argv: Sequence[str], cwd: str, *, env: Mapping[str, str] | None = None,
                          width: int = 200, height: int = 50, extra: Sequence[str] = (),
                          keep: bool = True) -> None:
        """A detached session running ``argv`` (exec'd directly, never through a shell), kept after its
        process exits (``remain-on-exit``) so its output and exit status can be read.  ``extra`` are
        more tmux commands (already split into words) run in the same tmux invocation."""
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = list(argv)
        if len(cmd) == 1:
            cmd = ["/usr/bin/env", cmd[0]]  # tmux hands a lone word to the shell; two or more it execs
        env_args: list[str] = []
        for k, v in (env or {}).items():
            env_args += ["-e", f"{k}={v}"]
        prefix: list[str] = []
        if self.use_scope and not await self.server_running():
            prefix = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                      f"--unit=aiwg-tmux-{secrets.token_hex(4)}", "--"]
        keep_args = [";", "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on"] if keep else []
        await self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), "-c", cwd, *env_args,
                       "--", *cmd, *keep_args, *extra, prefix=prefix)

    async def pane(self, name: str) -> Pane | None:
        try:
            out = await self.run("display-message", "-p", "-t", f"={name}:",
                                 "#{pane_dead}\t#{pane_dead_status}\t#{pane_pid}\t#{pane_current_command}")
        except TmuxError:
            return None
        dead, status, pid, command = [*out.rstrip("\n").split("\t"), "", "", "", ""][:4]
        return Pane(dead == "1", int(status) if status.lstrip("-").isdigit() else None,
                    int(pid) if pid.isdigit() else None, command)

    async def capture(self, name: str, *, history: bool = False) -> str:
        args = ["capture-pane", "-p", "-J", "-t", f"={name}:"]
        if history:
            args += ["-S", "-", "-E", "-"]
        return await self.run(*args)

    async def send_text(self, name: str, text: str, enter: bool = True) -> None:
        await self.run("send-keys", "-t", f"={name}:", "-l", "--", text)
        if enter:
            await self.run("send-keys", "-t", f"={name}:", "Enter")

    async def panes(self, name: str) -> list[bool]:
        """Whether each pane of the session's window is dead."""
        out = await self.run("list-panes", "-t", f"={name}:", "-F", "#{pane_dead}")
        return [line == "1" for line in out.splitlines() if line]

    async def kill_session(self, name: str) -> None:
        with contextlib.suppress(TmuxError):
            await self.run("kill-session", "-t", f"={name}")

    async def wait_channel(self, channel: str) -> asyncio.subprocess.Process:
        """Start ``tmux wait-for CHANNEL``: it exits when the channel is signalled (or the server dies)."""
        if shutil.which("tmux") is None:
            raise TmuxMissing()
        _unblock_sigchld()
        return await asyncio.create_subprocess_exec(
            *self.argv("wait-for", channel), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=self.env)
