"""Interactive agent sessions: ``claude`` (not ``-p``) in its own tmux session, optionally in a fresh worktree.

Each session is recorded in the task store as a task with source ``session`` (its id is the session's id):
``running`` while the pane lives, then ``completed`` / ``failed`` with the pane's exit status
(``remain-on-exit`` keeps the dead pane, ``pane_dead_status`` says how it ended) and the pane's whole
output saved as the task's log.  The end is noticed without polling: a ``pane-died`` hook on the session
signals a tmux ``wait-for`` channel that the service waits on.  The state of a live session (working,
waiting for input) is read from the pane with ``capture-pane``.

Worktrees: ``git worktree add -b BRANCH`` under the state directory, then the configured setup argv.
Killing a session whose worktree has uncommitted changes is refused (listing them) unless the worktree
is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from .. import command
from ..protocol import utc_now
from .conversations import ChatError
from .store import ConversationStore
from .tmux import Tmux, TmuxError, TmuxMissing

__all__ = ["Recorder", "Sessions"]

log = logging.getLogger(__name__)

#: The pane runs the agent under this constant script: everything a user typed stays in "$@" (never shell
#: code).  It writes the agent's exit status to a file and signals the session's wait-for channel itself, so
#: the end is known even when tmux is slow to reap the pane (tmux 3.3 sometimes leaves it a zombie).
WRAPPER = ('f=$1; sock=$2; ch=$3; shift 3; "$@"; s=$?; printf %s "$s" > "$f"; '
           'tmux -S "$sock" wait-for -S "$ch"; exit "$s"')

#: What claude shows while it works (and the fake claude imitates).
BUSY_MARKS = ("esc to interrupt",)
TAIL_LINES = 15


class Recorder(Protocol):
    """The task store's narrow port for work it does not run itself."""

    def begin(self, project: str, prompt: str, agent: str, log_path: str) -> str: ...

    def end(self, task_id: str, *, exit_code: int | None, result: str | None, error: str | None,
            cancelled: bool) -> None: ...

    def state(self, task_id: str) -> str | None: ...


async def _git(*args: str, cwd: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("git", *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await command.finish(proc, command.GIT_TIMEOUT_S, f"git {args[0] if args else ''}")
    except command.CommandTimeout as e:
        return 124, str(e)
    return proc.returncode or 0, out.decode(errors="replace").strip()


class Sessions:
    def __init__(self, tmux: Tmux, store: ConversationStore, recorder: Recorder, *, state_dir: Path,
                 projects: Callable[[], Iterable[str]], resolve_root: Callable[[str], str],
                 agent_argv: Callable[[str], list[str]], setup: Callable[[str], tuple[list[str] | None, float]],
                 pane_env: Callable[[], dict[str, str]],
                 confine: Callable[[str, str, list[str]], list[str]] | None = None) -> None:
        """``confine(project, cwd, argv)``: the agent's argv inside its sandbox (the same policy as its tasks,
        through bubblewrap: a pane is not a unit); raises ``RuntimeError`` (why) when none is possible."""
        self.tmux = tmux
        self._confine = confine
        self.store = store
        self.recorder = recorder
        self.state_dir = state_dir
        self._projects = projects
        self._resolve_root = resolve_root
        self._agent_argv = agent_argv
        self._setup = setup
        self._pane_env = pane_env
        self._waiters: dict[str, asyncio.Task[None]] = {}
        self._killing: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Re-attach to sessions a previous life of the service started (they outlive it)."""
        for row in self.store.sessions(live_only=True):
            try:
                if await self.tmux.has_session(row["tmux"]):
                    self._watch(row)
                else:
                    await self._finish(row, None, "the tmux session was gone when the service started")
            except TmuxError as exc:
                log.warning("session %s: cannot check it: %s", row["id"], exc)

    async def stop(self) -> None:
        """Stop waiting; the sessions themselves live on."""
        for t in self._waiters.values():
            t.cancel()
        for t in list(self._waiters.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._waiters.clear()

    # -- API ----------------------------------------------------------------------------------------
    async def new(self, *, project: str | None, agent: str | None, worktree: str | None,
                  prompt: str | None) -> dict[str, Any]:
        root = self._project(project)
        if shutil.which("tmux", path=(self.tmux.env or os.environ).get("PATH")) is None:
            raise TmuxMissing()
        cwd = root
        branch = None
        wt_path = None
        if worktree is not None:
            wt_path, branch = await self._make_worktree(root, worktree)
            cwd = wt_path
        argv = self._agent_argv(root)
        if agent:
            argv += ["--agent", agent]
        if prompt:
            argv += ["--", prompt]  # a prompt that starts with "-" stays a prompt
        if self._confine is not None:
            try:
                argv = self._confine(root, cwd, argv)
            except RuntimeError as exc:
                if wt_path is not None:
                    await _git("worktree", "remove", "--force", wt_path, cwd=root)
                raise ChatError(str(exc)) from None
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        sid = self.recorder.begin(root, prompt or "(interactive session)", "claude", "")
        log_path = log_dir / f"{sid}.log"
        name = f"aiwg-{sid}"
        channel = f"aiwg-exit-{sid}"
        status_dir = self.state_dir / "sessions"
        status_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        wrapped = ["/bin/sh", "-c", WRAPPER, "aiwg-session", str(status_dir / f"{sid}.status"),
                   str(self.tmux.socket), channel, *argv]
        try:
            await self.tmux.new_session(name, wrapped, cwd, env=self._pane_env(), extra=[
                ";", "set-hook", "-t", f"={name}:", "pane-died", f"wait-for -S {channel}"])
        except TmuxError as exc:
            self.recorder.end(sid, exit_code=None, result=None, error=f"tmux: {exc}", cancelled=False)
            if wt_path is not None:
                await _git("worktree", "remove", "--force", wt_path, cwd=root)
            raise
        row = {"id": sid, "project": root, "tmux": name, "cwd": cwd, "worktree": wt_path, "branch": branch,
               "agent": agent, "prompt": prompt or "", "created_at": utc_now()}
        self.store.add_session(row)
        self._watch(row)
        return {**self._public(row), "state": "starting", "log_path": str(log_path)}

    async def list(self, project: str | None = None, *, all: bool = False) -> list[dict[str, Any]]:
        root = self._resolve_root(project) if project is not None else None
        out = []
        for row in self.store.sessions(root, live_only=not all):
            info = self._public(row)
            if row["ended_at"] is not None:
                info["state"] = "exited"
            else:
                info["state"] = await self.state_of(row)
                if info["state"] == "exited":  # dead, and its end not recorded yet: the pane knows the status
                    pane = await self.tmux.pane(row["tmux"])
                    info["exit_status"] = pane.status if pane is not None else None
            out.append(info)
        return out

    async def state_of(self, row: dict[str, Any]) -> str:
        pane = await self.tmux.pane(row["tmux"])
        if pane is None or pane.dead:
            return "exited"
        screen = await self.tmux.capture(row["tmux"])
        lines = [ln for ln in screen.splitlines() if ln.strip()][-TAIL_LINES:]
        if not lines:
            return "starting"
        tail = "\n".join(lines[-3:]).lower()
        return "working" if any(m in tail for m in BUSY_MARKS) else "waiting for input"

    async def send(self, sid: str, text: str) -> dict[str, Any]:
        row = self._live(sid)
        pane = await self.tmux.pane(row["tmux"])
        if pane is None or pane.dead:
            raise ChatError(f"session {sid} has exited", param="id")
        await self.tmux.send_text(row["tmux"], text)
        return {"id": sid, "sent": True}

    async def capture(self, sid: str) -> dict[str, Any]:
        row = self._row(sid)
        if row["ended_at"] is not None:
            raise ChatError(f"session {sid} has exited (its output is in `aiwgctl task logs {sid}`)", param="id")
        return {"id": sid, "screen": await self.tmux.capture(row["tmux"]), "state": await self.state_of(row)}

    async def kill(self, sid: str, *, keep_worktree: bool = False) -> dict[str, Any]:
        row = self._row(sid)
        if row["worktree"] and not keep_worktree and os.path.isdir(row["worktree"]):
            rc, changes = await _git("status", "--porcelain", cwd=row["worktree"])
            if rc == 0 and changes:
                raise ChatError(f"the worktree {row['worktree']} has changes that are not committed:\n{changes}\n"
                                f"commit them, or kill with --keep-worktree", param="keep_worktree",
                                changes=changes.splitlines())
        was_running = row["ended_at"] is None
        if was_running:
            self._killing.add(sid)
            waiter = self._waiters.pop(sid, None)
            if waiter is not None:
                waiter.cancel()
            await self._finish(row, None, None, killed=True)
        removed = False
        if row["worktree"] and not keep_worktree and os.path.isdir(row["worktree"]):
            rc, out = await _git("worktree", "remove", "--force", row["worktree"], cwd=row["project"])
            if rc != 0:
                raise ChatError(f"the session ended, but its worktree could not be removed: {out}")
            removed = True
        # worktree_exists: a second kill (or a worktree removed by hand) must not report a path "kept" that is gone
        return {"id": sid, "killed": True, "was_running": was_running, "worktree_removed": removed,
                "branch": row["branch"], "worktree": row["worktree"],
                "worktree_exists": bool(row["worktree"]) and os.path.isdir(row["worktree"])}

    # -- internals ------------------------------------------------------------------------------------
    def _public(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "taskId": row["id"], "project": row["project"], "tmux": row["tmux"],
                "socket": str(self.tmux.socket),
                "cwd": row["cwd"], "worktree": row["worktree"], "branch": row["branch"], "agent": row["agent"],
                "created_at": row["created_at"], "ended_at": row.get("ended_at"), "exit_status": row.get("exit_status")}

    def _row(self, sid: str) -> dict[str, Any]:
        row = self.store.session(sid)
        if row is None:
            raise ChatError(f"no session {sid!r} (see `aiwgctl session list`)", param="id")
        return row

    def _live(self, sid: str) -> dict[str, Any]:
        row = self._row(sid)
        if row["ended_at"] is not None:
            raise ChatError(f"session {sid} has exited", param="id")
        return row

    def _project(self, value: str | None) -> str:
        served = list(self._projects())
        if value is None:
            if len(served) == 1:
                return served[0]
            raise ChatError(f"required: the service serves {len(served)} projects", param="project")
        root = self._resolve_root(value)
        if root not in served:
            raise ChatError(f"{root} is not a project this service serves", param="project")
        return root

    async def _make_worktree(self, root: str, name: str) -> tuple[str, str]:
        rc, _ = await _git("check-ref-format", "--branch", name, cwd=root)
        if rc != 0 or name.startswith("-"):
            raise ChatError(f"{name!r} is not a valid branch name", param="worktree")
        rc, out = await _git("rev-parse", "--show-toplevel", cwd=root)
        if rc != 0:
            raise ChatError(f"{root} is not a git repository: {out}", param="worktree")
        rc, _ = await _git("show-ref", "--verify", "--quiet", f"refs/heads/{name}", cwd=root)
        if rc == 0:
            raise ChatError(f"branch {name!r} exists already; pick a new name", param="worktree")
        tag = hashlib.sha1(root.encode()).hexdigest()[:8]
        base = self.state_dir / "worktrees" / f"{Path(root).name}-{tag}"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = str(base / name.replace("/", "-"))
        if os.path.exists(path):
            raise ChatError(f"{path} exists already", param="worktree")
        rc, out = await _git("worktree", "add", "-b", name, path, "HEAD", cwd=root)
        if rc != 0:
            raise ChatError(f"git worktree add failed: {out}", param="worktree")
        argv, timeout = self._setup(root)
        if argv:
            cmd = [a.replace("{project}", root) for a in argv]
            try:
                proc = await asyncio.create_subprocess_exec(*cmd, cwd=path, stdin=asyncio.subprocess.DEVNULL,
                                                            stdout=asyncio.subprocess.PIPE,
                                                            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
                out_b, _ = await asyncio.wait_for(proc.communicate(), timeout)
                rc, out = proc.returncode or 0, out_b.decode(errors="replace").strip()
            except (OSError, TimeoutError) as exc:
                rc, out = -1, str(exc) or "timed out"
            if rc != 0:
                await _git("worktree", "remove", "--force", path, cwd=root)
                await _git("branch", "-D", name, cwd=root)
                raise ChatError(f"the worktree setup {cmd} failed ({rc}): {out[-2000:]}", param="worktree")
        return path, name

    def _watch(self, row: dict[str, Any]) -> None:
        sid = row["id"]
        self._waiters[sid] = asyncio.get_running_loop().create_task(self._wait_end(row), name=f"aiwg-session-{sid}")

    async def _wait_end(self, row: dict[str, Any]) -> None:
        """Sleep on the session's wait-for channel (no polling), then record how it ended."""
        sid = row["id"]
        proc = await self.tmux.wait_channel(f"aiwg-exit-{sid}")
        try:
            # The pane may have died before the hook was set, or while no service was waiting.
            pane = await self.tmux.pane(row["tmux"])
            if pane is None or not pane.dead:
                await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._waiters.pop(sid, None)
        if sid not in self._killing:
            await self._finish(row, None, None)

    async def _finish(self, row: dict[str, Any], status: int | None, error: str | None, *,
                      killed: bool = False) -> None:
        """Save the pane's output to the task log, record the exit status, close the tmux session."""
        sid = row["id"]
        log_path = self.state_dir / "logs" / f"{sid}.log"
        text = ""
        status_file = self.state_dir / "sessions" / f"{sid}.status"
        with contextlib.suppress(OSError, ValueError):
            status = int(status_file.read_text().strip())
            status_file.unlink()
        with contextlib.suppress(TmuxError):
            pane = await self.tmux.pane(row["tmux"])
            if status is None and pane is not None and pane.dead:
                status = pane.status  # the wrapper itself was killed: tmux's word, if it has it
            if pane is not None:
                text = re.sub(r"\n{3,}", "\n\n", (await self.tmux.capture(row["tmux"], history=True)).rstrip()) + "\n"
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as exc:
            log.warning("session %s: cannot save its output: %s", sid, exc)
        self.store.end_session(sid, utc_now(), status)
        tail = "\n".join([ln for ln in text.splitlines() if ln.strip()][-20:]) or None
        if killed:
            err = "killed by `aiwgctl session kill`"
        elif error:
            err = error
        elif status not in (0, None):
            err = f"exit code {status}"
        else:
            err = None if status == 0 else "exit status unknown"
        self.recorder.end(sid, exit_code=status, result=tail, error=err, cancelled=killed)
        await self.tmux.kill_session(row["tmux"])  # last: until now the dead pane still said how it ended
        self._killing.discard(sid)
