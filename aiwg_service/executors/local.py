"""The ``local`` executor: each task attempt runs under its own runner, outside the service.

Under systemd (a user manager is reachable) the runner is the main process of a transient unit
``aiwg-task-<id>.service`` with its own cgroup and the profile's ``MemoryMax=``/``CPUQuota=``, so
stopping, restarting or crashing ``aiwg.service`` never touches it, and the service's own sandbox
does not apply to agents.  Elsewhere (foreground, containers) the runner is forked into its own
session.  Either way the runner (``runner.py``) writes the output to the task's log and its exit
status to ``<state>/runs/<id>.<attempt>.exit``, which this class reads: files, not pipes, are what
survive the service.

Run files, per attempt (``<state>/runs``, 0700): ``.spec`` (argv, env: read and deleted by the runner),
``.claim`` (created exclusively by the runner, or by recovery to stop a launch the service lost
track of), ``.exit`` (the result).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import command
from ..sandbox import proxy as sandbox_proxy
from ..sandbox.launch import Confinement, confine
from ..systemd import user_manager_reachable
from .base import ExecutorError, ExitInfo, Handle, LaunchError, LaunchSpec, Probe, RunRef
from .runner import claim as _claim
from .runner import write_bytes_atomic
from .shim import SCRIPT, script_for, shell_ok, write_private

__all__ = ["RUNNER", "LocalExecutor", "unit_name"]

log = logging.getLogger(__name__)

RUNNER = str(Path(__file__).with_name("runner.py"))


#: Every file of a run, ``<state>/runs/<id>.<attempt><suffix>``: dropped together.
#: The shim (``shim.py``), written once into the runs dir (which a confined unit keeps writable and visible).
SHIM_FILE = ".agent-shim.sh"
_RUN_FILES = (".spec", ".sh", ".stdin", ".fifo", ".child", ".rc", ".exit", ".claim")


def unit_name(task_id: str) -> str:
    return f"aiwg-task-{task_id}.service"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) pid in clock ticks since boot, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("unreadable run record %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def _exit_info(d: Mapping[str, Any]) -> ExitInfo:
    def num(key: str) -> int | None:
        v = d.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    err = d.get("error")
    return ExitInfo(exit_code=num("exit_code"), signal=num("signal"), timed_out=bool(d.get("timed_out")),
                    log_bytes=num("log_bytes"), truncated=bool(d.get("truncated")),
                    finished_at=d.get("finished_at") if isinstance(d.get("finished_at"), str) else None,
                    error=err if isinstance(err, str) else None,
                    stream_tail=d.get("stream_tail") if isinstance(d.get("stream_tail"), str) else None)


class LocalExecutor:
    """Runs attempts on this machine, as transient systemd units or detached runners."""

    name = "local"

    def __init__(self, state_dir: str | os.PathLike[str], *, use_systemd: bool,
                 python: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        """``use_systemd``: run each attempt as a transient user unit (see ``systemd_available``).
        ``environ`` is the environment ``systemd-run``/``systemctl`` run with (they need the user
        manager's address); agents never see it, they get the spec's env."""
        self.runs_dir = Path(state_dir) / "runs"
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.use_systemd = use_systemd
        self.python = python or sys.executable
        self.environ = dict(os.environ if environ is None else environ)
        self._boot = _boot_id()
        #: ``setsid`` and ``/bin/sh`` for the exec-first start (``shim.py``); None: the runner starts agents.
        self._setsid = shutil.which("setsid", path=self.environ.get("PATH") or "/usr/bin:/bin")
        self._shim: str | None = None
        if self._setsid and os.access("/bin/sh", os.X_OK):
            self._shim = str(self.runs_dir / SHIM_FILE)  # in the runs dir: a confined unit sees it
            try:
                write_bytes_atomic(self._shim, SCRIPT.encode(), durable=False)
            except OSError as e:
                log.warning("cannot write %s (%s): agents start through the runner", self._shim, e)
                self._shim = None
        #: ``network: allow`` runs: the task's filtering proxy, by task id (closed when the run is forgotten)
        self._proxies: dict[str, sandbox_proxy.Proxy] = {}

    # -- paths and identity ------------------------------------------------------------------------------
    def _base(self, task_id: str, attempt: int) -> Path:
        return self.runs_dir / f"{task_id}.{attempt}"

    def _paths(self, handle_or_ref: Mapping[str, Any] | RunRef) -> tuple[Path, Path, Path]:
        if isinstance(handle_or_ref, RunRef):
            base = self._base(handle_or_ref.task_id, handle_or_ref.attempt)
        else:
            base = Path(handle_or_ref["run"])
        return base.with_suffix(base.suffix + ".spec"), base.with_suffix(base.suffix + ".claim"), \
            base.with_suffix(base.suffix + ".exit")

    def _alive(self, pid: Any, start_time: Any, boot_id: Any) -> bool:
        """Is ``pid`` still the very process recorded (same boot, same start time)?"""
        if not isinstance(pid, int) or pid <= 1 or boot_id != self._boot:
            return False
        st = _start_time(pid)
        return st is not None and st == start_time

    # -- start --------------------------------------------------------------------------------------------
    async def start(self, spec: LaunchSpec) -> Handle:
        base = self._base(spec.task_id, spec.attempt)
        spec_path = base.with_suffix(base.suffix + ".spec")
        claim_path = base.with_suffix(base.suffix + ".claim")
        if claim_path.exists():
            raise LaunchError(f"attempt {spec.attempt} of task {spec.task_id} was already claimed ({claim_path})")
        # The sandbox seam: one call, the policy rendered for the mechanism this launch uses (unit
        # properties, or a bubblewrap argv prefix), plus the proxy of ``network: allow``.
        box = await self._confine(spec, base)
        argv = [*box.prefix, *([box.program, *spec.argv[1:]] if box.program else spec.argv)]
        env = {**spec.env, **box.env}
        exe = self._exec_first(argv, env, spec.cwd)
        if exe is not None:  # the shim starts the agent, then becomes its runner: only limits in the spec
            record: dict[str, Any] = {"log_path": spec.log_path, "timeout_s": spec.timeout_s,
                                      "max_output_bytes": spec.max_output_bytes, "kill_grace_s": spec.kill_grace_s}
        else:  # the runner starts it (the agent or its cwd is missing: the runner records the clear error)
            record = {"argv": argv, "cwd": spec.cwd, "env": env,
                      "log_path": spec.log_path, "timeout_s": spec.timeout_s, "umask": spec.umask,
                      "max_output_bytes": spec.max_output_bytes, "kill_grace_s": spec.kill_grace_s,
                      "stdin": spec.stdin}
        try:  # marshal: the runner reads it without importing json (its start-up is every task's)
            write_bytes_atomic(str(spec_path), marshal.dumps(record), durable=False)
            if exe is not None:
                self._write_shim_files(str(base), spec, [exe, *argv[1:]], env)
        except (OSError, ValueError) as e:
            self._drop_files(str(base))
            await self._drop_proxy(spec.task_id)
            raise LaunchError(f"cannot write the run's files {base}.*: {e.strerror or e}") from None
        runner = [self.python, "-I", "-S", RUNNER]
        try:
            if exe is not None:
                cmd = ["/bin/sh", str(self._shim), str(base), self.python, RUNNER, str(self._setsid)]
                if self.use_systemd:
                    handle = await self._start_unit(spec, cmd, box.properties)
                else:  # in a thread: vfork holds the caller until the child's exec, long on a busy machine
                    handle = await asyncio.to_thread(self._spawn_shim, cmd, env)
            elif self.use_systemd:
                handle = await self._start_unit(spec, [*runner, str(spec_path)], box.properties)
            else:
                handle = await self._start_runner(runner, str(spec_path))
        except LaunchError:
            await self._drop_proxy(spec.task_id)
            # Nothing was launched.  (On a cancel the launch may be under way: the spec stays for the
            # runner, and recovery's claim settles it if the runner never came.)
            self._drop_files(str(base))
            raise
        handle["run"] = str(base)
        handle["sandbox"] = box.record
        return handle

    async def _confine(self, spec: LaunchSpec, base: Path) -> Confinement:
        proxy_path = str(base.with_suffix(".px") / "proxy.sock") \
            if spec.sandbox is not None and spec.sandbox.network == "allow" else None
        # the runner itself (inside the unit) writes the run records and the log
        keep = [str(self.runs_dir), spec.log_path] if self.use_systemd else []
        if self.use_systemd and spec.sandbox is not None and spec.sandbox.enabled:
            with contextlib.suppress(OSError):  # bound into the unit: it must exist before it starts
                os.close(os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        if proxy_path is not None and spec.sandbox is not None:  # first: the socket is bound in
            await self._start_proxy(spec.task_id, spec.sandbox.allow_hosts, proxy_path)
        box = confine(spec.sandbox, systemd=self.use_systemd, keep=keep, python=self.python,
                      proxy_socket=proxy_path, path=self.environ.get("PATH"),
                      program=spec.argv[0] if spec.argv else None)
        if box.refused:
            await self._drop_proxy(spec.task_id)
            raise LaunchError(box.refused)
        return box

    async def _start_proxy(self, task_id: str, hosts: list[str], path: str) -> None:
        await self._drop_proxy(task_id)
        px = sandbox_proxy.Proxy(task_id, hosts, path)
        try:
            await px.start()
        except OSError as e:
            raise LaunchError(f"cannot start the sandbox's proxy at {path}: {e.strerror or e}") from None
        self._proxies[task_id] = px

    async def _drop_proxy(self, task_id: str, *, done: bool = True) -> None:
        px = self._proxies.pop(task_id, None)
        if px is not None:
            await px.close(remove_dir=done)

    def _exec_first(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> str | None:
        """The agent's path when the shim can start it (see ``shim.py``), else None (the runner does)."""
        if self._shim is None or not argv or not shell_ok(env) or not os.path.isdir(cwd):
            return None
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if exe is None or not os.access(exe, os.X_OK) or os.path.isdir(exe):
            return None
        return exe

    def _write_shim_files(self, base: str, spec: LaunchSpec, argv: Sequence[str], env: Mapping[str, str]) -> None:
        stdin_path = f"{base}.stdin" if spec.stdin is not None else None
        if stdin_path is not None:
            write_private(stdin_path, (spec.stdin or "").encode())
        write_private(f"{base}.sh", script_for(argv=argv, env=env, cwd=spec.cwd, umask=spec.umask,
                                               stdin_path=stdin_path, clear_env=self.use_systemd).encode())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{base}.fifo")
        os.mkfifo(f"{base}.fifo", 0o600)

    @staticmethod
    def _drop_files(base: str) -> None:
        for suffix in _RUN_FILES:
            with contextlib.suppress(OSError):
                os.unlink(base + suffix)

    def _spawn_shim(self, cmd: list[str], env: Mapping[str, str]) -> Handle:
        """fork+exec of the shim in its own session, the agent's env as its own; it outlives us (it is
        our child only until we go: :meth:`wait` reaps it)."""
        try:
            pid = os.posix_spawn(cmd[0], cmd, dict(env), setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2)])
        except OSError as e:
            raise LaunchError(f"cannot start the agent's shim ({cmd[0]}): {e.strerror or e}") from None
        return {"kind": "local-runner", "pid": pid, "start_time": _start_time(pid), "boot_id": self._boot}

    async def _start_runner(self, runner: list[str], spec_path: str) -> Handle:
        try:
            proc = await asyncio.create_subprocess_exec(
                *runner, "--detach", spec_path, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, env=self._runner_env())
        except OSError as e:
            raise LaunchError(f"cannot start the agent runner ({self.python}): {e.strerror or e}") from None
        try:
            out, err = await command.finish(proc, command.SYSTEMD_TIMEOUT_S, "the agent runner's start")
        except command.CommandTimeout as e:
            raise LaunchError(str(e)) from None
        try:
            pid = int(out.split()[0])
        except (ValueError, IndexError):
            raise LaunchError(f"the agent runner did not start: {err.decode(errors='replace').strip()[:300]}") \
                from None
        return {"kind": "local-runner", "pid": pid, "start_time": _start_time(pid), "boot_id": self._boot}

    def _runner_env(self) -> dict[str, str]:
        """The runner itself needs almost nothing: the agent's env comes from the spec."""
        keep = ("PATH", "LANG", "LC_ALL", "TZ")
        return {k: v for k, v in self.environ.items() if k in keep}

    def unit_argv(self, spec: LaunchSpec, command: Sequence[str], properties: Sequence[str] = ()) -> list[str]:
        """``systemd-run`` for the run's transient unit; ``properties`` (the sandbox's) are added as ``-p``
        after the service's own."""
        unit = unit_name(spec.task_id)
        argv = ["systemd-run", "--user", f"--unit={unit}", "--collect", "--quiet",
                "-p", "Type=exec", "-p", "KillMode=mixed",
                "-p", f"TimeoutStopSec={int(spec.kill_grace_s) + 10}s",
                f"--description=aiwg task {spec.task_id} ({spec.profile or 'agent'})",
                f"--setenv=AIWG_UNIT={unit}"]
        if spec.memory_max:
            argv += ["-p", f"MemoryMax={spec.memory_max}"]
        if spec.cpu_quota:
            argv += ["-p", f"CPUQuota={spec.cpu_quota}"]
        for prop in properties:
            argv += ["-p", prop]
        return [*argv, "--", *command]

    async def _start_unit(self, spec: LaunchSpec, command: list[str], properties: Sequence[str] = ()) -> Handle:
        unit = unit_name(spec.task_id)
        rc, _out, err = await self._run(self.unit_argv(spec, command, properties))
        if rc != 0:
            msg = err.strip().splitlines()[-1] if err.strip() else f"exit status {rc}"
            if "already" in err or "exists" in err:
                raise LaunchError(f"unit {unit} is already in use ({msg}); stop it with "
                                  f"`systemctl --user stop {unit}` or let recovery adopt it")
            raise LaunchError(f"systemd-run could not start {unit}: {msg}")
        props = await self.unit_props([unit])
        p = props.get(unit, {})
        pid = int(p.get("MainPID") or 0) or None
        handle: Handle = {"kind": "local-unit", "unit": unit, "invocation": p.get("InvocationID") or None,
                          "pid": pid, "start_time": _start_time(pid) if pid else None, "boot_id": self._boot}
        return handle

    async def _run(self, argv: Sequence[str]) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.environ)
        except OSError as e:
            raise LaunchError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            out, err = await command.finish(proc, command.SYSTEMD_TIMEOUT_S, argv[0])
        except command.CommandTimeout as e:
            raise LaunchError(str(e)) from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def unit_props(self, units: Sequence[str]) -> dict[str, dict[str, str]]:
        """``MainPID``, ``InvocationID``, ``ActiveState`` of units (one ``systemctl show`` for all)."""
        if not units:
            return {}
        _rc, out, _err = await self._run(["systemctl", "--user", "show", "-p", "Id,MainPID,InvocationID,ActiveState",
                                         "--", *units])
        res: dict[str, dict[str, str]] = {}
        for block in out.split("\n\n"):
            d = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if d.get("Id"):
                res[d["Id"]] = d
        return res

    # -- adopt / poll ----------------------------------------------------------------------------------------
    async def adopt(self, ref: RunRef) -> Probe:
        probe = self._probe(ref)
        box = (ref.handle or {}).get("sandbox") or {}
        if probe.state == "running" and box.get("proxy") and ref.task_id not in self._proxies:
            try:  # a restarted service serves a live run's proxy again, at the same socket
                await self._start_proxy(ref.task_id, list(box.get("allow_hosts") or []), str(box["proxy"]))
            except LaunchError as e:
                log.warning("task %s: %s", ref.task_id, e)
        if probe.state == "never_started" and self.use_systemd:
            # A launch may still be on its way through systemd-run: the runner will find the claim
            # taken and exit, but do not leave a unit behind either.
            await self._run(["systemctl", "--user", "stop", "--no-block", unit_name(ref.task_id)])
        return probe

    async def poll(self, refs: Sequence[RunRef]) -> dict[str, Probe]:
        return {r.task_id: self._probe(r) for r in refs}

    def _probe(self, ref: RunRef) -> Probe:
        _spec, claim_path, exit_path = self._paths(ref)
        base = str(self._base(ref.task_id, ref.attempt))
        rec = _read_json(exit_path)
        cl = _read_json(claim_path)
        start = cl.get("log_start") if cl else None
        if rec is not None:
            return Probe(state="finished", handle=self._handle_from(ref, cl, base), exit=_exit_info(rec),
                         log_start=start)
        if cl is None and not claim_path.exists():
            if _claim(str(claim_path), {"by": "recovery", "pid": os.getpid()}):
                for suffix in (".spec", ".sh", ".stdin", ".fifo"):  # what the launch left (env, prompt)
                    with contextlib.suppress(OSError):
                        os.unlink(base + suffix)
                return Probe(state="never_started")
            cl = _read_json(claim_path)
        if cl is None or cl.get("by") != "runner":
            if cl is not None and cl.get("by") == "recovery":
                return Probe(state="never_started")
            return Probe(state="lost", exit=ExitInfo(error="the run's claim record is unreadable"))
        handle = self._handle_from(ref, cl, base)
        if self._alive(handle.get("pid"), handle.get("start_time"), handle.get("boot_id")):
            return Probe(state="running", handle=handle, log_start=start)
        rec = _read_json(exit_path)  # it may have finished between the two looks
        if rec is not None:
            return Probe(state="finished", handle=handle, exit=_exit_info(rec), log_start=start)
        self._sweep_child(cl, base)
        return Probe(state="lost", handle=handle, log_start=start,
                     exit=ExitInfo(error="the agent runner ended without recording a result (killed?)"))

    def _handle_from(self, ref: RunRef, cl: Mapping[str, Any] | None, base: str) -> Handle:
        h: Handle = dict(ref.handle or {})
        if cl is not None and cl.get("by") == "runner":
            ident = cl.get("ident") or ""
            boot, _, st = str(ident).partition(":")
            h.update({"pid": cl.get("pid"), "start_time": int(st) if st.isdigit() else None, "boot_id": boot})
            if cl.get("unit"):
                h.update({"kind": "local-unit", "unit": cl["unit"] + ("" if cl["unit"].endswith(".service")
                                                                      else ".service")})
            if cl.get("child"):
                h["child"] = cl["child"]
        h.setdefault("kind", "local-unit" if self.use_systemd else "local-runner")
        h["run"] = base
        return h

    def _sweep_child(self, cl: Mapping[str, Any], base: str | None = None) -> None:
        """The runner died (SIGKILL) and left its agent's group: kill it (the group id cannot be
        reused while any member lives, so what is left in it is ours).  The shim records the agent's
        pid in ``<run>.child`` before the runner is up to put it in the claim."""
        child = cl.get("child")
        if not isinstance(child, int) and base is not None:
            with contextlib.suppress(OSError, ValueError), open(base + ".child") as f:
                child = int(f.read().strip())
        if isinstance(child, int) and child > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)

    # -- wait / cancel -------------------------------------------------------------------------------------
    async def wait(self, handle: Handle) -> ExitInfo:
        _spec, claim_path, exit_path = self._paths(handle)
        pid, st, boot = handle.get("pid"), handle.get("start_time"), handle.get("boot_id")
        if not isinstance(pid, int) or st is None:
            cl = _read_json(claim_path)  # a runner that exited before we looked it up
            if cl is not None and cl.get("by") == "runner":
                h = self._handle_from(RunRef(task_id="", log_path="", handle=handle), cl, handle["run"])
                pid, st, boot = h.get("pid"), h.get("start_time"), h.get("boot_id")
        if self._alive(pid, st, boot):
            assert isinstance(pid, int)
            await self._pid_exit(pid)
        rec = _read_json(exit_path)
        if rec is not None:
            return _exit_info(rec)
        cl = _read_json(claim_path)
        if cl is not None:
            self._sweep_child(cl, handle["run"])
        return ExitInfo(error="the agent runner ended without recording a result (killed?)")

    async def _pid_exit(self, pid: int) -> None:
        """Until ``pid`` exits: a pidfd in the event loop, no polling (the runner is not our child)."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        with contextlib.suppress(ChildProcessError):  # our own child (a shim we spawned): reap it
            os.waitpid(pid, os.WNOHANG)

    async def cancel(self, handle: Handle, *, grace_s: float = 5.0) -> None:
        """SIGTERM to the runner: it stops the agent's group (SIGKILL after its grace) and records it."""
        pid = handle.get("pid")
        if self._alive(pid, handle.get("start_time"), handle.get("boot_id")):
            assert isinstance(pid, int)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            return
        if handle.get("kind") == "local-unit" and handle.get("unit"):
            # No runner pid known yet (start raced with the cancel): let systemd stop the cgroup.
            await self._run(["systemctl", "--user", "stop", "--no-block", str(handle["unit"])])

    async def forget(self, handle: Handle) -> None:
        if "run" not in handle:
            raise ExecutorError("not a local handle (no 'run')")
        box = handle.get("sandbox") or {}
        if box.get("proxy"):
            for task_id, px in list(self._proxies.items()):
                if px.path == box["proxy"]:
                    await self._drop_proxy(task_id)
        await asyncio.to_thread(self._drop_files, str(handle["run"]))

    async def close(self) -> None:
        """The proxies stop with the service (a restart's ``adopt`` serves live runs' proxies again)."""
        for task_id in list(self._proxies):
            await self._drop_proxy(task_id, done=False)


def systemd_available(environ: Mapping[str, str] | None = None) -> bool:
    """Run attempts as transient units only when the service itself runs under a user manager it can reach;
    in the foreground the detached runner is used."""
    return user_manager_reachable(environ)
