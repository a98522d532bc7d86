"""What each served project carries, so that the AIWG daemon's own clients find the service and talk about
that project alone.

- Its own socket (``$XDG_RUNTIME_DIR/aiwg/p/<hash>.sock``, 0600 in a 0700 directory), which its
  ``.aiwg/daemon/daemon.sock`` links to: a connection made there is about that project (``Connection.project``),
  so ``task list``, ``task stats``, ``chat`` and ``status`` need no project parameter, as with the AIWG daemon.
- ``.aiwg/daemon.pid``, the pid whose SIGTERM the AIWG CLI's ``stop`` sends: while the service serves one
  project, the service's own (``stop`` stops the service, as before); while it serves several, each project
  gets a stand-in process (``cat`` on a pipe from the service: it ends with the service, whatever kills it),
  and a SIGTERM (or SIGINT) to it stops serving that project only.
- ``.aiwg/daemon/state.json``, a link to the service's state file (the CLI's fallback without the socket).

Everything under ``.aiwg`` is made through directory fds that never follow a symlink (``safefs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from . import paths, pidfile, safefs
from .rpc import RpcServer, SocketInUse, bind_socket

log = logging.getLogger("aiwg.service")

#: A stand-in ended by one of these was asked to stop its project (the AIWG CLI's ``stop``, a user's kill).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class StandIn:
    """A small process that stands for one project in its ``.aiwg/daemon.pid``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.retired = False  # ended by us: not a request to stop the project

    @property
    def pid(self) -> int:
        return self.proc.pid

    def retire(self) -> None:
        self.retired = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class Presence:
    """The sockets, pid files and links of the served projects, kept in line with the set served now."""

    def __init__(self, rpc: RpcServer, socket_dir: Path, main_socket: Callable[[], Path], state_file: Path,
                 on_stop: Callable[[str], Awaitable[None]]) -> None:
        self.rpc = rpc
        self.socket_dir = socket_dir
        self.main_socket = main_socket
        self.state_file = state_file
        self.on_stop = on_stop
        self.sockets: dict[str, Path | None] = {}  # every served root: its own socket, or None (linked to ours)
        self.stand_ins: dict[str, StandIn] = {}
        self.closing = False
        self._watchers: set[asyncio.Task[None]] = set()

    def socket_for(self, root: str) -> Path:
        """Per service and project: two services (the user's and a per-project instance) never share one."""
        digest = hashlib.sha256(f"{self.main_socket()}\0{root}".encode()).hexdigest()[:12]
        return self.socket_dir / f"{digest}.sock"

    # -- the one entry point ---------------------------------------------------------------------------
    async def sync(self, roots: Iterable[str]) -> None:
        """Make what the served ``roots`` carry match them: new ones get theirs, gone ones lose theirs."""
        want = list(roots)
        for root in [r for r in self.sockets if r not in want]:
            self.drop(root)
        for root in want:
            if root not in self.sockets:
                await self._open(root)
        if len(want) == 1:  # one project: its pid is the service's, and SIGTERM stops the service
            for root in list(self.stand_ins):
                self.stand_ins.pop(root).retire()
            self._write_pid(want[0], os.getpid())
            return
        for root in want:
            si = self.stand_ins.get(root)
            if si is None or si.proc.returncode is not None:
                si = await self._spawn(root)
            if si is not None:
                self._write_pid(root, si.pid)

    async def close(self) -> None:
        """The service stops: pid files go, stand-ins end, project sockets close (links stay, as for systemd's
        own socket: a client that follows one finds nothing and says the service is not running)."""
        self.closing = True
        for root in list(self.sockets):
            self._remove_pid(root)
            self.rpc.close_project(root)
            sock = self.sockets.pop(root)
            if sock is not None:
                self._remove_socket(sock)
        for si in self.stand_ins.values():
            si.retire()
        self.stand_ins.clear()

    def drop(self, root: str) -> None:
        """``root`` is no longer served: its pid file, socket and links go."""
        self._remove_pid(root)
        si = self.stand_ins.pop(root, None)
        if si is not None:
            si.retire()
        self.rpc.close_project(root)
        sock = self.sockets.pop(root, None)
        if sock is not None:
            self._remove_socket(sock)
        with contextlib.suppress(OSError), safefs.project_subdir(root, ".aiwg", "daemon", create=False) as fd:
            for name, target in (("daemon.sock", sock or self.main_socket()), ("state.json", self.state_file)):
                with contextlib.suppress(OSError):
                    if os.readlink(name, dir_fd=fd) in (str(target), str(self.main_socket())):
                        os.unlink(name, dir_fd=fd)

    # -- parts -----------------------------------------------------------------------------------------
    async def _open(self, root: str) -> None:
        path = self.socket_for(root)
        try:
            paths.ensure_private_dir(self.socket_dir)
            sock = bind_socket(path)
            await self.rpc.serve_project(root, sock)
        except (OSError, SocketInUse) as exc:
            # the project is still served; its clients reach the service's own socket and name the project
            log.warning("cannot make %s's own socket %s: %s; its link leads to the service's socket", root, path,
                        exc, extra={"PROJECT": root})
            self.sockets[root] = None
            self._link(root, "daemon.sock", str(self.main_socket()))
        else:
            self.sockets[root] = path
            self._link(root, "daemon.sock", str(path))
            log.info("serving %s (its own socket: %s)", root, path, extra={"PROJECT": root})
        self._link(root, "state.json", str(self.state_file))

    def _remove_socket(self, path: Path) -> None:
        if safefs.is_socket(path):  # never a file put in its place
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _spawn(self, root: str) -> StandIn | None:
        cat = shutil.which("cat") or "/bin/cat"
        try:
            proc = await asyncio.create_subprocess_exec(
                cat, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True, cwd="/")  # a terminal's ^C is not for it
        except OSError as exc:
            log.warning("cannot start the stand-in process for %s's daemon.pid: %s; it holds the service's pid",
                        root, exc, extra={"PROJECT": root})
            self._write_pid(root, os.getpid())
            return None
        si = self.stand_ins[root] = StandIn(proc)
        task = asyncio.ensure_future(self._watch(root, si))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return si

    async def _watch(self, root: str, si: StandIn) -> None:
        rc = await si.proc.wait()
        if si.retired or self.closing:
            return
        if self.stand_ins.get(root) is si:
            del self.stand_ins[root]
        if rc < 0 and signal.Signals(-rc) in STOP_SIGNALS:
            log.info("project %s: its daemon.pid got %s; it is no longer served", root, signal.Signals(-rc).name,
                     extra={"PROJECT": root})
            self._remove_pid(root, si.pid)
            await self.on_stop(root)
            return
        log.warning("the stand-in process for %s ended (status %s); starting another", root, rc,
                    extra={"PROJECT": root})
        new = await self._spawn(root)
        if new is not None:
            self._write_pid(root, new.pid)

    def _write_pid(self, root: str, pid: int) -> None:
        try:
            if pidfile.read(root) != pid:
                pidfile.write(root, pid)
        except OSError as exc:
            log.warning("cannot write %s/.aiwg/%s: %s", root, pidfile.NAME, exc, extra={"PROJECT": root})

    def _remove_pid(self, root: str, pid: int | None = None) -> None:
        si = self.stand_ins.get(root)
        for candidate in {pid, os.getpid(), si.pid if si is not None else None} - {None}:
            with contextlib.suppress(OSError):
                if pidfile.remove(root, candidate):
                    return

    @staticmethod
    def _link(root: str, name: str, target: str) -> None:
        link = os.path.join(root, ".aiwg", "daemon", name)
        try:
            with safefs.project_subdir(root, ".aiwg", "daemon") as fd:
                if safefs.set_link(fd, name, target) == "occupied":
                    log.warning("%s exists and is not our link (an old AIWG daemon?); leaving it", link,
                                extra={"PROJECT": root})
        except OSError as exc:
            log.warning("cannot link %s to %s: %s", link, target, exc.strerror or exc, extra={"PROJECT": root})
