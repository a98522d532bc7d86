"""The ``ssh`` executor: task attempts run on a host from the user's ``~/.ssh/config`` (asyncssh).

Why this shape: the remote side runs the same stdlib-only agent runner as ``local`` (copied to the
host once per connection), so a remote run outlives both the service and the connection, enforces
its own timeout, and leaves its output and exit record in files under ``remote_state_dir``:

- **Start**: one round trip writes the attempt's spec (0600, read and deleted by the runner: the
  environment never appears on a command line) and launches the runner, under
  ``systemd-run --user --unit=aiwg-task-<id> --collect`` when the host has a user manager, else
  detached into its own session (``runner.py --detach``).  Before that, the checkout at
  ``remote_path`` must exist and be at this side's ``HEAD`` (``sync: git-push`` pushes it first).
- **Environment**: sanitized like the local one, but with the *host's* ``PATH``/``HOME``/``USER``/
  ``LOGNAME``/``SHELL`` (read once per connection); the profile's variables and ``AIWG_TASK_ID``
  come from the spec.
- **Output**: ``tail -c +N -F --pid=<runner>`` streams the remote log into the task's local log; after
  a dropped connection it resumes at the local size, so every byte arrives once.
- **Host keys**: checked against ``known_hosts`` (``UserKnownHostsFile`` of the ssh config, else
  ``~/.ssh/known_hosts``); an unknown or changed key refuses the connection.  ``UserKnownHostsFile
  none`` does not turn checking off here.
- **Down**: a host that cannot be reached makes the executor ``down``: starts raise
  :class:`ExecutorUnavailable` (the task stays queued), waits hold until it is back, reconnecting
  with a doubling backoff (only while something waits: no timers at idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncssh

from .. import command
from .base import ExecutorError, ExitInfo, Handle, LaunchError, LaunchSpec, Probe, RunRef
from .checkout import git_head, mismatch, remote_cwd
from .remote_common import ExecutorUnavailable, exit_info, spec_bytes
from .schema import SshExecutorConfig

__all__ = ["SshExecutor"]

log = logging.getLogger(__name__)

RUNNER_SOURCE = Path(__file__).with_name("runner.py")
#: Taken from the host's login environment, never from ours.
REMOTE_BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL")
_CONN_ERRORS = (OSError, asyncssh.Error, asyncio.TimeoutError, EOFError)

_BOOTSTRAP = r"""
set -e
umask 077
D={dir}
mkdir -p "$D"
cat > "$D/aiwg-runner.py.$$"
mv "$D/aiwg-runner.py.$$" "$D/aiwg-runner.py"
cd "$D" && printf 'dir=%s\n' "$(pwd -P)"
for v in PATH HOME USER LOGNAME SHELL; do eval "printf 'env.%s=%s\n' $v \"\${{$v:-}}\""; done
if command -v {python} >/dev/null 2>&1; then echo python=yes; else echo python=no; fi
if command -v systemd-run >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
  echo systemd=yes; else echo systemd=no; fi
"""


def _q(s: str) -> str:
    return shlex.quote(s)


class SshExecutor:
    """Runs attempts on one ssh host (see the module docstring)."""

    def __init__(self, name: str, cfg: SshExecutorConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.state = "unknown"
        self.last_error: str | None = None
        self.systemd: bool | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._dir = ""
        self._remote_env: dict[str, str] = {}
        self._backoff = 1.0
        self._waiting = 0
        self._pending_cancel: set[str] = set()
        self._watch_task: asyncio.Task[None] | None = None

    # -- connection ---------------------------------------------------------------------------------------
    def _options(self) -> asyncssh.SSHClientConnectionOptions:
        paths = [os.path.expanduser(self.cfg.ssh_config or "~/.ssh/config")]
        paths = [p for p in paths if os.path.exists(p)]
        opts = asyncssh.SSHClientConnectionOptions(config=paths, host=self.cfg.host)
        known = opts.known_hosts
        if known is None:  # "UserKnownHostsFile none" would switch checking off: not here
            default = Path("~/.ssh/known_hosts").expanduser()
            known = str(default) if default.is_file() else b""
        return asyncssh.SSHClientConnectionOptions(
            options=opts, known_hosts=known, connect_timeout=self.cfg.connect_timeout_seconds,
            keepalive_interval=self.cfg.keepalive_seconds, keepalive_count_max=3)

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The live connection, connecting (and bootstrapping the host) if needed; ExecutorUnavailable if not."""
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = None
            try:
                conn = await asyncssh.connect(self.cfg.host, options=self._options())
            except asyncssh.HostKeyNotVerifiable as e:
                self._down(f"host key of {self.cfg.host} is not trusted (not in known_hosts, or changed): {e}")
                raise ExecutorUnavailable(self.last_error or "") from None
            except asyncssh.PermissionDenied as e:
                self._down(f"ssh authentication to {self.cfg.host} failed: {e}")
                raise ExecutorUnavailable(self.last_error or "") from None
            except _CONN_ERRORS as e:
                self._down(f"cannot connect to {self.cfg.host}: {e or type(e).__name__}")
                raise ExecutorUnavailable(self.last_error or "") from None
            try:
                await self._bootstrap(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            conn_ref = conn

            async def watch_close() -> None:
                with contextlib.suppress(Exception):
                    await conn_ref.wait_closed()
                if self._conn is conn_ref:
                    self._conn = None
                    self._down(f"connection to {self.cfg.host} lost")

            self._watch_task = asyncio.get_running_loop().create_task(watch_close())  # keep a strong ref
            if self.state == "down":
                log.info("executor %s: %s is back", self.name, self.cfg.host)
            self.state, self._backoff = "up", 1.0
            return conn

    async def _bootstrap(self, conn: asyncssh.SSHClientConnection) -> None:
        script = _BOOTSTRAP.format(dir=_q(self.cfg.remote_state_dir), python=_q(self.cfg.python))
        try:
            r = await conn.run(script, input=RUNNER_SOURCE.read_text(), check=False,
                               timeout=self.cfg.connect_timeout_seconds * 2)
        except _CONN_ERRORS as e:
            self._down(f"setting up {self.cfg.host} failed: {e}")
            raise ExecutorUnavailable(self.last_error or "") from None
        if r.exit_status != 0:
            self._down(f"setting up {self.cfg.host} failed: {str(r.stderr).strip()[:300]}")
            raise ExecutorUnavailable(self.last_error or "")
        info: dict[str, str] = {}
        for line in str(r.stdout).splitlines():
            k, _, v = line.partition("=")
            info[k] = v
        if info.get("python") != "yes":
            self._down(f"{self.cfg.python} not found on {self.cfg.host} (the agent runner needs it)")
            raise ExecutorUnavailable(self.last_error or "")
        self._dir = info.get("dir", self.cfg.remote_state_dir)
        self._remote_env = {k[4:]: v for k, v in info.items() if k.startswith("env.") and v}
        has = info.get("systemd") == "yes"
        self.systemd = has if self.cfg.systemd == "auto" else self.cfg.systemd == "yes"

    def _down(self, error: str) -> None:
        if self.state != "down" or error != self.last_error:
            log.warning("executor %s is down: %s", self.name, error)
        self.state, self.last_error = "down", error

    async def _reconnect(self) -> asyncssh.SSHClientConnection:
        """Hold until the host answers again (doubling backoff up to ``reconnect_max_seconds``)."""
        while True:
            try:
                return await self.connection()
            except ExecutorUnavailable:
                await asyncio.sleep(self._backoff)
                self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_seconds)

    async def _run(self, cmd: str, *, input: str | bytes | None = None,
                   timeout: float = 60.0) -> asyncssh.SSHCompletedProcess:
        """Run ``cmd`` on the host (text out; ``input`` may be bytes, sent as they are)."""
        conn = await self.connection()
        try:
            if isinstance(input, bytes):
                r = await conn.run(cmd, input=input, check=False, timeout=timeout, encoding=None)
                r.stdout = (r.stdout or b"").decode(errors="replace")  # type: ignore[union-attr]
                r.stderr = (r.stderr or b"").decode(errors="replace")  # type: ignore[union-attr]
                return r
            return await conn.run(cmd, input=input, check=False, timeout=timeout)
        except _CONN_ERRORS as e:
            self._down(f"{self.cfg.host}: {e or type(e).__name__}")
            raise ExecutorUnavailable(self.last_error or "") from None

    async def probe(self) -> None:
        """Connect once to learn whether the host answers (for ``aiwgctl executors`` before any task)."""
        with contextlib.suppress(ExecutorUnavailable):
            await self.connection()

    def health(self) -> dict[str, Any]:
        return {"kind": "ssh", "host": self.cfg.host, "state": self.state, "last_error": self.last_error,
                "systemd": self.systemd, "waiting": self._waiting}

    # -- start ---------------------------------------------------------------------------------------------
    async def _push(self, local_cwd: str, cwd: str, commit: str) -> None:
        """Push the commit to the remote checkout and check it out there (refused if it has local changes)."""
        ssh_cmd = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes"
        if self.cfg.ssh_config:
            ssh_cmd += f" -F {_q(os.path.expanduser(self.cfg.ssh_config))}"
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "USER", "LANG", "SSH_AUTH_SOCK")}
        env["GIT_SSH_COMMAND"] = ssh_cmd
        proc = await asyncio.create_subprocess_exec(
            "git", "-C", local_cwd, "push", "--quiet", "--force", f"ssh://{self.cfg.host}{_abs(cwd)}",
            f"{commit}:refs/aiwg/sync", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        try:
            _out, err = await command.finish(proc, command.GIT_TIMEOUT_S * 2, f"git push to {self.cfg.host}")
        except command.CommandTimeout as e:
            raise LaunchError(str(e)) from None
        if proc.returncode != 0:
            raise LaunchError(f"git push to {self.cfg.host}:{cwd} failed: {err.decode(errors='replace').strip()}")
        r = await self._run(f"cd {_q(cwd)} && git diff --quiet HEAD && git diff --cached --quiet && "
                            f"git -c advice.detachedHead=false checkout -q --detach {commit}")
        if r.exit_status != 0:
            raise LaunchError(f"cannot check out {commit[:12]} in {cwd} on {self.cfg.host} (local changes there?) "
                              f"{str(r.stderr).strip()[:300]}")

    def remote_env(self, env: dict[str, str]) -> dict[str, str]:
        out = {k: v for k, v in env.items() if k not in (*REMOTE_BASE_ENV, "XDG_RUNTIME_DIR", "TMPDIR")}
        out.update(self._remote_env)
        out.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return out

    async def start(self, spec: LaunchSpec) -> Handle:
        await self.connection()
        cwd = remote_cwd(spec.options.get("remote_path") or self.cfg.remote_path, spec.cwd)
        local, _ = await git_head(spec.cwd)
        if local is not None and self.cfg.sync == "git-push":
            await self._push(spec.cwd, cwd, local)
        base = f"{self._dir}/{spec.task_id}.{spec.attempt}.{os.urandom(3).hex()}"
        record = {"argv": spec.argv, "cwd": cwd, "env": self.remote_env(spec.env), "log_path": f"{base}.log",
                  "timeout_s": spec.timeout_s, "umask": spec.umask, "max_output_bytes": spec.max_output_bytes,
                  "kill_grace_s": spec.kill_grace_s, "stdin": spec.stdin}
        runner = f"{_q(self.cfg.python)} -I -S {_q(self._dir + '/aiwg-runner.py')}"
        unit = f"aiwg-task-{spec.task_id}.service"
        if self.systemd:
            launch = (f"systemd-run --user --unit={_q(unit)} --collect --quiet -p Type=exec -p KillMode=mixed "
                      f"-p TimeoutStopSec={int(spec.kill_grace_s) + 10}s --setenv=AIWG_UNIT={_q(unit)} -- "
                      f"{runner} {_q(base + '.spec')} && systemctl --user show -p MainPID --value {_q(unit)}")
        else:
            launch = f"{runner} --detach {_q(base + '.spec')}"
        try:
            log_start = os.stat(spec.log_path).st_size
        except OSError:
            log_start = 0
        # One round trip: the checkout is there and at our commit, then the spec is written and launched.
        check = f"cd {_q(cwd)} 2>/dev/null || {{ echo aiwg-nodir; exit 3; }}; "
        if local is not None:
            check += ('h=$(git rev-parse --verify -q HEAD 2>/dev/null); '
                      f'[ "$h" = {_q(local)} ] || {{ echo "aiwg-head=$h"; exit 4; }}; ')
        r = await self._run(f"{check}umask 077 && cat > {_q(base + '.spec')} && {launch}", input=spec_bytes(record))
        out = str(r.stdout).strip()
        if r.exit_status == 3 and out == "aiwg-nodir":
            raise LaunchError(f"remote path {cwd} does not exist on {self.cfg.host}")
        if r.exit_status == 4 and out.startswith("aiwg-head="):
            there = out.removeprefix("aiwg-head=") or None
            raise LaunchError(mismatch(local, there, f"the checkout {cwd} on {self.cfg.host}") or "checkout mismatch")
        pid_s = out.splitlines()[-1:] or [""]
        if r.exit_status != 0 or not pid_s[0].isdigit() or pid_s[0] == "0":
            with contextlib.suppress(ExecutorUnavailable):
                await self._run(f"rm -f {_q(base + '.spec')}")
            raise LaunchError(f"could not start the agent on {self.cfg.host}: "
                              f"{(str(r.stderr).strip() or out)[:500]}")
        handle: Handle = {"kind": "ssh", "executor": self.name, "host": self.cfg.host, "run": base,
                          "pid": int(pid_s[0]), "log": spec.log_path, "log_start": log_start}
        if self.systemd:
            handle["unit"] = unit
        return handle

    # -- adopt / poll ----------------------------------------------------------------------------------------
    async def adopt(self, ref: RunRef) -> Probe:
        return (await self.poll([ref]))[ref.task_id]

    async def poll(self, refs: Sequence[RunRef]) -> dict[str, Probe]:
        out: dict[str, Probe] = {}
        alive_cache: dict[str, bool] = {}
        for ref in refs:
            handle = dict(ref.handle or {})
            if handle.get("kind") not in (None, "ssh"):
                raise ExecutorError(f"not an ssh handle: {handle.get('kind')!r}")
            if "run" not in handle or "pid" not in handle:
                # Died inside start: claim every spec of that attempt so none of them ever runs.
                r = await self._run(f"cd {_q(self._dir)} && for s in {_q(ref.task_id)}.{ref.attempt}.*.spec; do "
                                    "[ -e \"$s\" ] || continue; b=${s%.spec}; "
                                    "if (set -C; echo '{\"by\": \"recovery\"}' > \"$b.claim\") 2>/dev/null; "
                                    "then rm -f \"$s\"; else echo \"$b\"; fi; done")
                found = str(r.stdout).split()
                if not found:
                    out[ref.task_id] = Probe(state="never_started")
                    continue
                out[ref.task_id] = Probe(state="lost", exit=ExitInfo(
                    error=f"a run of this attempt started on {self.cfg.host} but its handle was not recorded "
                          f"({found[0]})"))
                continue
            try:
                alive = await self._alive(handle, cache=alive_cache, refs=refs)
            except ExecutorUnavailable:
                # The run is somewhere out there: hold it; wait() reconnects and follows it.
                out[ref.task_id] = Probe(state="running", handle=handle, log_start=handle.get("log_start"))
                continue
            if alive:
                out[ref.task_id] = Probe(state="running", handle=handle, log_start=handle.get("log_start"))
                continue
            info = await self._finish(handle)
            out[ref.task_id] = Probe(state="lost" if info.error and info.exit_code is None else "finished",
                                     handle=handle, exit=info, log_start=handle.get("log_start"))
        return out

    async def _alive(self, handle: Handle, *, cache: dict[str, bool] | None = None,
                     refs: Sequence[RunRef] = ()) -> bool:
        """Is the run's runner alive?  With ``cache``/``refs``: one round trip answers for every ref."""
        if cache is None:
            r = await self._run(_alive_cmd(handle))
            return str(r.stdout).strip() == "alive"
        if not cache:
            hs = [dict(r.handle) for r in refs if r.handle and "run" in r.handle and "pid" in r.handle]
            script = "; ".join(f"if {_alive_cmd(h, bare=True)}; then echo {_q(h['run'])}; fi" for h in hs)
            r = await self._run(script or "true")
            live = set(str(r.stdout).split())
            cache.update({h["run"]: h["run"] in live for h in hs})
        return cache.get(handle["run"], False)

    # -- wait / cancel ---------------------------------------------------------------------------------------
    async def wait(self, handle: Handle) -> ExitInfo:
        self._waiting += 1
        try:
            while True:
                try:
                    conn = await self.connection()
                except ExecutorUnavailable:
                    conn = await self._reconnect()
                try:
                    if str(handle.get("run")) in self._pending_cancel:
                        await self._send_cancel(handle)
                    rec = await self._follow(conn, handle)
                    if rec is None:
                        if await self._alive(handle):  # the stream broke, not the run: follow again
                            continue
                        return await self._finish(handle)
                    info = exit_info(rec)
                    remote_bytes = info.log_bytes
                    if remote_bytes is not None and self._copied(handle) < remote_bytes:
                        return await self._finish(handle)  # fetch what the stream did not bring
                    info.log_bytes = self._local_size(handle)
                    return info
                except (ExecutorUnavailable, *_CONN_ERRORS) as e:
                    if not isinstance(e, ExecutorUnavailable):
                        self._down(f"{self.cfg.host}: {e or type(e).__name__}")
                    await asyncio.sleep(min(self._backoff, 1.0))
        finally:
            self._waiting -= 1

    def _copied(self, handle: Handle) -> int:
        """Bytes of the remote log already in the local one."""
        try:
            size = os.stat(handle["log"]).st_size
        except OSError:
            size = 0
        return max(0, size - int(handle.get("log_start") or 0))

    async def _follow(self, conn: asyncssh.SSHClientConnection, handle: Handle) -> dict[str, Any] | None:
        """Stream the remote log into the local one until the runner exits; its exit record, if it left one.

        One channel: stdout is the log from where the local copy ends (``tail -F --pid``), stderr the
        exit record once the runner is gone."""
        base = _q(handle["run"])
        cmd = (f"if {_alive_cmd(handle, bare=True)}; then tail -c +{self._copied(handle) + 1} -s 0.25 -F "
               f"--pid={int(handle['pid'])} {base}.log 2>/dev/null; fi; cat {base}.exit >&2 2>/dev/null; true")
        async with conn.create_process(cmd, encoding=None, stdin=asyncssh.DEVNULL) as proc:
            err_task = asyncio.ensure_future(proc.stderr.read())
            try:
                with open(handle["log"], "ab") as f:
                    while True:
                        data = await proc.stdout.read(65536)
                        if not data:
                            break
                        f.write(data)
                        f.flush()
                err = await err_task
                await proc.wait()
            finally:
                if not err_task.done():
                    err_task.cancel()
                with contextlib.suppress(BaseException):
                    await err_task  # retrieve its outcome (a lost connection), never leave it dangling
        if proc.exit_status != 0:
            return None  # the channel broke (no exit status): the caller checks and follows again
        try:
            rec = json.loads(err) if err.strip() else None
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None

    async def _finish(self, handle: Handle) -> ExitInfo:
        """The runner is gone: copy what is left of the log, then read its exit record (one round trip)."""
        base = _q(handle["run"])
        conn = await self.connection()
        try:
            proc = await conn.run(f"tail -c +{self._copied(handle) + 1} {base}.log 2>/dev/null; "
                                  f"cat {base}.exit >&2 2>/dev/null; true", encoding=None, check=False, timeout=120)
        except _CONN_ERRORS as e:
            self._down(f"{self.cfg.host}: {e or type(e).__name__}")
            raise ExecutorUnavailable(self.last_error or "") from None
        if proc.stdout:
            with open(handle["log"], "ab") as f:
                f.write(proc.stdout if isinstance(proc.stdout, bytes) else str(proc.stdout).encode())
        rec: Any = None
        with contextlib.suppress(ValueError):
            rec = json.loads(proc.stderr) if proc.stderr and proc.stderr.strip() else None
        if not isinstance(rec, dict):
            return ExitInfo(log_bytes=self._local_size(handle),
                            error=f"the agent runner on {self.cfg.host} ended without recording a result (killed?)")
        info = exit_info(rec)
        info.log_bytes = self._local_size(handle)
        return info

    @staticmethod
    def _local_size(handle: Handle) -> int | None:
        try:
            return os.stat(handle["log"]).st_size
        except OSError:
            return None

    async def cancel(self, handle: Handle, *, grace_s: float = 5.0) -> None:
        """SIGTERM to the runner (it stops the agent's group, SIGKILL after its grace, and records it).
        While the host is away the cancel is kept and sent as soon as it is back (``wait`` does)."""
        try:
            await self._send_cancel(handle)
        except ExecutorUnavailable as e:
            log.warning("cancel of %s on %s sent when the host is back: %s", handle.get("run"), self.cfg.host, e)
            self._pending_cancel.add(str(handle.get("run")))

    async def _send_cancel(self, handle: Handle) -> None:
        if handle.get("unit"):
            await self._run(f"systemctl --user kill --kill-who=main --signal=TERM {_q(handle['unit'])} "
                            f"2>/dev/null || {_kill_cmd(handle)}")
        else:
            await self._run(_kill_cmd(handle))
        self._pending_cancel.discard(str(handle.get("run")))

    async def forget(self, handle: Handle) -> None:
        base = handle.get("run")
        if not base:
            raise ExecutorError("not an ssh handle (no 'run')")
        with contextlib.suppress(ExecutorUnavailable):
            await self._run(f"rm -f {_q(base)}.spec {_q(base)}.claim {_q(base)}.exit {_q(base)}.log")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def _abs(path: str) -> str:
    return path if path.startswith("/") else "/~/" + path


def _alive_cmd(handle: Handle, *, bare: bool = False) -> str:
    """Is the recorded pid still our runner (its command line names our spec file)?"""
    pid = int(handle["pid"])
    test = f"tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null | grep -qF -- {_q(handle['run'] + '.spec')}"
    return test if bare else f"if {test}; then echo alive; else echo gone; fi"


def _kill_cmd(handle: Handle) -> str:
    return f"if {_alive_cmd(handle, bare=True)}; then kill -TERM {int(handle['pid'])}; fi"
