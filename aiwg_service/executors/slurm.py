"""The ``slurm`` executor: each task attempt is one batch job on a Slurm cluster.

Why this shape: Slurm already queues, places and limits jobs; we only submit, watch and cancel.

- **Submit**: ``sbatch --parsable --chdir=<checkout> --job-name=aiwg-<task> --output=<log>
  --open-mode=append --time=<minutes>`` plus partition/account/cpus/mem/extra args from the config.
  The batch script is two lines that exec the agent runner (``runner.py``, stdlib only) with the
  attempt's spec file, so the job behaves exactly like a local run: the runner claims the attempt,
  writes the agent's output to the task's log, enforces the timeout to the second (``--time`` is a
  backstop) and records the exit status in ``<run>.exit``.  The spec (argv, env, possibly secrets) is
  a 0600 file read and deleted by the runner; nothing secret goes on a command line or through
  ``sbatch``'s environment.  The state directory must therefore be on the cluster's shared
  filesystem (as ``$HOME`` usually is), which is also where Slurm writes ``--output``.
- **Watch**: one ``squeue`` per executor per tick, whatever the number of jobs (:class:`_Poller`).
  Ticks are adaptive: ``poll_min_seconds`` after a submit, a cancel or a change, growing to
  ``poll_max_seconds`` while nothing changes, and no ticks at all while no job is watched.  The exit
  record, not ``squeue``, is the result: it survives ``MinJobAge`` purges and needs no ``sacct``.
- **Down**: when ``squeue``/``sbatch`` cannot reach slurmctld the executor is ``down``
  (:class:`ExecutorUnavailable`): starts are refused without failing the task, waits keep waiting.
- **Cancel**: ``scancel --batch --signal=TERM`` lets the runner stop the agent and record it;
  a plain ``scancel`` follows after the grace if the job is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inotify_simple import INotify, flags

from .base import ExecutorError, ExitInfo, Handle, LaunchError, LaunchSpec, Probe, RunRef
from .checkout import git_head, mismatch, remote_cwd
from .remote_common import ExecutorUnavailable, exit_info, spec_bytes
from .runner import claim as _claim
from .runner import write_bytes_atomic
from .schema import SlurmExecutorConfig

__all__ = ["SlurmExecutor", "job_name"]

log = logging.getLogger(__name__)

RUNNER_SOURCE = Path(__file__).with_name("runner.py")
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING",
                    "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED",
                    "RESV_DEL_HOLD", "SPECIAL_EXIT"})
#: Phrases of Slurm's client errors that mean "the controller is not answering", not "your job is bad".
_DOWN_HINTS = ("unable to contact slurm controller", "socket timed out", "connection refused",
               "zero bytes were transmitted", "communication connection failure", "slurm_load_jobs error",
               "connection timed out", "unable to establish controller")


def job_name(task_id: str) -> str:
    return f"aiwg-{task_id}"


def _looks_down(err: str) -> bool:
    low = err.lower()
    return any(h in low for h in _DOWN_HINTS)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Job:
    __slots__ = ("exit_code", "id", "reason", "seen", "state")

    def __init__(self, job_id: str) -> None:
        self.id = job_id
        self.state: str | None = None
        self.reason = ""
        self.exit_code: int | None = None
        self.seen = False  # listed by squeue at least once


class _Poller:
    """One ``squeue`` per tick for every watched job of this executor; ticks only while jobs are watched."""

    def __init__(self, ex: SlurmExecutor) -> None:
        self.ex = ex
        self.jobs: dict[str, _Job] = {}
        self.watchers: dict[str, int] = {}
        self.interval = ex.cfg.poll_min_seconds
        self.last_poll = 0.0
        self.calls = 0
        self._kick = asyncio.Event()
        self._tick: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._exits: dict[str, asyncio.Future[None]] = {}  # "<run>.exit" name -> waiter to wake
        self.logs: dict[str, int] = {}  # log path -> size last seen (see watch_log)
        self._log_task: asyncio.Task[None] | None = None
        self._inotify: INotify | None = None

    # Exit records usually land on a filesystem this machine sees change (inotify): the waiter wakes at
    # once instead of at the next squeue.  On NFS written by another node no event comes; the poll finds it.
    def exit_event(self, exit_name: str) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        if self._inotify is None:
            try:
                self._inotify = INotify()
                self._inotify.add_watch(str(self.ex.runs_dir), flags.MOVED_TO | flags.CLOSE_WRITE)
                loop.add_reader(self._inotify.fileno(), self._on_inotify)
            except OSError as e:
                log.debug("no inotify on %s: %s", self.ex.runs_dir, e)
                self._inotify = None
        fut = self._exits.get(exit_name)
        if fut is None or fut.done():
            fut = self._exits[exit_name] = loop.create_future()
        return fut

    def drop_exit_event(self, exit_name: str) -> None:
        self._exits.pop(exit_name, None)
        if not self._exits and self._inotify is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None

    def _on_inotify(self) -> None:
        assert self._inotify is not None
        for ev in self._inotify.read(timeout=0):
            fut = self._exits.get(ev.name)
            if fut is not None and not fut.done():
                fut.set_result(None)

    # Logs on NFS written by another node raise no inotify event here, so the supervisor's follower would
    # only see them at the end.  While jobs run, a stat per log every ``log_poll_seconds`` notices growth,
    # and an open+close for writing (no data) makes the local kernel emit IN_CLOSE_WRITE for the follower.
    def watch_log(self, path: str) -> None:
        self.logs.setdefault(path, -1)
        if self._log_task is None or self._log_task.done():
            self._log_task = asyncio.get_running_loop().create_task(self._nudge_logs(),
                                                                    name=f"slurm-logs-{self.ex.name}")

    def unwatch_log(self, path: str) -> None:
        self.logs.pop(path, None)

    async def _nudge_logs(self) -> None:
        while self.logs:
            await asyncio.sleep(self.ex.cfg.log_poll_seconds)
            for path, seen in list(self.logs.items()):
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue
                if size != seen:
                    self.logs[path] = size
                    with contextlib.suppress(OSError):
                        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))

    def watch(self, job_id: str) -> _Job:
        self.watchers[job_id] = self.watchers.get(job_id, 0) + 1
        job = self.jobs.setdefault(job_id, _Job(job_id))
        self._ensure()
        return job

    def unwatch(self, job_id: str) -> None:
        n = self.watchers.get(job_id, 0) - 1
        if n <= 0:
            self.watchers.pop(job_id, None)
            self.jobs.pop(job_id, None)
        else:
            self.watchers[job_id] = n

    def kick(self) -> None:
        """Something changed (submit, cancel): poll soon again, within the minimum spacing."""
        self.interval = self.ex.cfg.poll_min_seconds
        self._kick.set()

    async def next_tick(self) -> None:
        """Until the next ``squeue`` has been parsed (or failed)."""
        self._ensure()
        if self._tick is None or self._tick.done():
            self._tick = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._tick)

    def _ensure(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"slurm-poll-{self.ex.name}")

    async def _loop(self) -> None:
        cfg = self.ex.cfg
        while self.watchers:
            due = self.last_poll + self.interval
            now = time.monotonic()
            if due > now:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), due - now)
                # a kick shortens the wait, but never below the minimum spacing
                rest = self.last_poll + cfg.poll_min_seconds - time.monotonic()
                if rest > 0:
                    await asyncio.sleep(rest)
            if not self.watchers:
                break
            self.last_poll = time.monotonic()
            changed = await self._poll_once()
            if changed:
                self.interval = cfg.poll_min_seconds
            else:
                self.interval = min(self.interval * 1.5, cfg.poll_max_seconds)
            tick, self._tick = self._tick, None
            if tick is not None and not tick.done():
                tick.set_result(None)
        tick, self._tick = self._tick, None
        if tick is not None and not tick.done():
            tick.set_result(None)

    async def _poll_once(self) -> bool:
        self.calls += 1
        try:
            listing = await self.ex.squeue()
        except ExecutorError as e:
            self.interval = min(max(self.interval, self.ex.cfg.poll_min_seconds) * 2, self.ex.cfg.poll_max_seconds)
            self.ex.set_down(str(e))
            return False
        self.ex.set_up()
        changed = False
        for job in self.jobs.values():
            row = listing.get(job.id)
            if row is None:
                if job.state != "GONE":
                    job.state, changed = "GONE", True
                continue
            state, code, reason = row
            if state != job.state:
                changed = True
            job.state, job.exit_code, job.reason, job.seen = state, code, reason, True
        return changed


class SlurmExecutor:
    """Runs attempts as Slurm batch jobs (see the module docstring)."""

    def __init__(self, name: str, cfg: SlurmExecutorConfig, state_dir: str | os.PathLike[str], *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.runs_dir = Path(state_dir) / "runs"
        self.runs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = dict(os.environ if environ is None else environ)
        # What the Slurm clients need (SLURM_CONF and friends); agents never see this, they get the spec's env.
        keep = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "MUNGE_SOCKET"}
        self.environ = {k: v for k, v in env.items() if k in keep or k.startswith(("SLURM_", "LC_"))}
        self.user = env.get("USER") or getpass.getuser()
        self.state = "unknown"  # up | down | unknown (nothing asked yet)
        self.last_error: str | None = None
        self.poller = _Poller(self)
        self._kill_later: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- state ---------------------------------------------------------------------------------------------
    def set_down(self, error: str) -> None:
        if self.state != "down":
            log.warning("executor %s is down: %s", self.name, error)
        self.state, self.last_error = "down", error

    def set_up(self) -> None:
        if self.state == "down":
            log.info("executor %s is back", self.name)
        self.state = "up"

    def health(self) -> dict[str, Any]:
        return {"kind": "slurm", "state": self.state, "last_error": self.last_error,
                "watched_jobs": len(self.poller.jobs), "squeue_calls": self.poller.calls,
                "poll_interval_s": round(self.poller.interval, 2)}

    async def probe(self) -> None:
        """One ``squeue`` to learn whether the cluster answers (for ``aiwgctl executors`` before any task)."""
        try:
            await self.squeue()
        except ExecutorError as e:
            self.set_down(str(e))
        else:
            self.set_up()

    # -- commands ------------------------------------------------------------------------------------------
    def _which(self, cmd: str) -> str:
        exe = shutil.which(cmd, path=self.environ.get("PATH"))
        if exe is None:
            raise LaunchError(f"{cmd} not found on PATH ({self.environ.get('PATH', '')}): is this a Slurm "
                              f"submit host? (Debian: apt install slurm-client)")
        return exe

    async def _cmd(self, argv: Sequence[str], stdin: bytes | None = None) -> tuple[int, str, str]:
        exe = self._which(argv[0])
        try:
            proc = await asyncio.create_subprocess_exec(
                exe, *argv[1:], stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.environ,
                start_new_session=True)
        except OSError as e:
            raise LaunchError(f"cannot run {argv[0]}: {e.strerror or e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.cfg.command_timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ExecutorUnavailable(f"{argv[0]} did not answer within {self.cfg.command_timeout_seconds:g}s") \
                from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def squeue(self) -> dict[str, tuple[str, int | None, str]]:
        """Job id -> (state, raw exit status, reason) for every job of this user slurmctld still knows."""
        rc, out, err = await self._cmd(["squeue", "--noheader", "--states=all", f"--user={self.user}",
                                        "--Format=JobID:|,State:|,exit_code:|,Reason:"])
        if rc != 0:
            raise ExecutorUnavailable(f"squeue failed: {err or f'exit status {rc}'}")
        res: dict[str, tuple[str, int | None, str]] = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) < 3 or not parts[0]:
                continue
            code = int(parts[2]) if parts[2].lstrip("-").isdigit() else None
            res[parts[0]] = (parts[1], code, parts[3] if len(parts) > 3 else "")
        return res

    # -- start -----------------------------------------------------------------------------------------
    def _runner_path(self) -> Path:
        """A copy of the runner in the (shared) runs dir: the node needs only python3, not this package."""
        dst = self.runs_dir / "aiwg-runner.py"
        src = RUNNER_SOURCE.read_bytes()
        try:
            if dst.read_bytes() == src:
                return dst
        except OSError:
            pass
        tmp = dst.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(src)
        tmp.chmod(0o600)
        tmp.replace(dst)
        return dst

    def sbatch_argv(self, spec: LaunchSpec, cwd: str) -> list[str]:
        c = self.cfg
        timeout = spec.timeout_s or c.default_time_minutes * 60
        # The runner stops the agent at timeout_s itself; Slurm's limit only catches a runner that could not.
        minutes = max(1, math.ceil((timeout + spec.kill_grace_s + 60) / 60))
        argv = ["sbatch", "--parsable", f"--chdir={cwd}", f"--job-name={job_name(spec.task_id)}",
                f"--output={spec.log_path}", "--open-mode=append", f"--time={minutes}", "--export=ALL",
                "--kill-on-invalid-dep=yes"]
        if c.partition:
            argv.append(f"--partition={c.partition}")
        if c.account:
            argv.append(f"--account={c.account}")
        if c.cpus:
            argv.append(f"--cpus-per-task={c.cpus}")
        if c.mem:
            argv.append(f"--mem={c.mem}")
        return [*argv, *c.extra_args]

    def _base(self, task_id: str, attempt: int) -> Path:
        # A fresh suffix per submission: a job whose sbatch answer we lost can never claim a later try.
        return self.runs_dir / f"{task_id}.{attempt}.{os.urandom(3).hex()}"

    async def start(self, spec: LaunchSpec) -> Handle:
        self._which("sbatch")
        cwd = remote_cwd(spec.options.get("remote_path") or self.cfg.remote_path, spec.cwd)
        if cwd != spec.cwd:
            local, _why = await git_head(spec.cwd)
            there, why = await git_head(cwd)
            problem = mismatch(local, there, f"the checkout {cwd}") if local else None
            if local and there is None:
                problem = f"the checkout {cwd} on the cluster: {why}"
            if problem:
                raise LaunchError(problem)
        base = self._base(spec.task_id, spec.attempt)
        spec_path = Path(f"{base}.spec")
        record = {"argv": spec.argv, "cwd": cwd, "env": spec.env, "log_path": spec.log_path,
                  "timeout_s": spec.timeout_s, "umask": spec.umask, "max_output_bytes": spec.max_output_bytes,
                  "kill_grace_s": spec.kill_grace_s, "stdin": spec.stdin}
        try:
            runner = self._runner_path()
            write_bytes_atomic(str(spec_path), spec_bytes(record))
        except OSError as e:
            raise LaunchError(f"cannot write the run's files in {self.runs_dir}: {e.strerror or e}") from None
        try:
            log_start = os.stat(spec.log_path).st_size
        except OSError:
            log_start = 0
        script = f"#!/bin/sh\nexec {_sh(self.cfg.python)} -I -S {_sh(str(runner))} {_sh(str(spec_path))}\n"
        try:
            rc, out, err = await self._cmd(self.sbatch_argv(spec, cwd), stdin=script.encode())
        except ExecutorUnavailable:
            # sbatch may or may not have queued it: make sure that job, if any, never runs the agent.
            _claim(f"{base}.claim", {"by": "service", "reason": "sbatch did not answer"})
            spec_path.unlink(missing_ok=True)
            raise
        except BaseException:
            spec_path.unlink(missing_ok=True)
            raise
        if rc != 0:
            spec_path.unlink(missing_ok=True)
            if _looks_down(err):
                self.set_down(err)
                raise ExecutorUnavailable(f"slurmctld is not answering: {err}")
            raise LaunchError(f"Slurm rejected the job: {err or f'sbatch exit status {rc}'}")
        self.set_up()
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise LaunchError(f"sbatch answered {out.strip()!r}, not a job id")
        self.poller.kick()
        return {"kind": "slurm", "executor": self.name, "job": job_id, "run": str(base), "log": spec.log_path,
                "log_start": log_start}

    # -- adopt / poll -----------------------------------------------------------------------------------------
    async def adopt(self, ref: RunRef) -> Probe:
        return (await self.poll([ref]))[ref.task_id]

    async def poll(self, refs: Sequence[RunRef]) -> dict[str, Probe]:
        listing: dict[str, tuple[str, int | None, str]] | None = None
        down = False
        by_name: dict[str, str] = {}
        out: dict[str, Probe] = {}
        for ref in refs:
            handle = dict(ref.handle or {})
            if handle.get("kind") not in (None, "slurm"):
                raise ExecutorError(f"not a slurm handle: {handle.get('kind')!r}")
            base = handle.get("run") or self._find_base(ref)
            if base is not None:
                handle["run"] = base
                rec = _read_json(Path(f"{base}.exit"))
                if rec is not None:
                    out[ref.task_id] = Probe(state="finished", handle=handle, exit=exit_info(rec),
                                             log_start=handle.get("log_start"))
                    continue
            if listing is None and not down:
                try:
                    listing = await self.squeue()
                    self.set_up()
                except ExecutorUnavailable as e:
                    down = True
                    self.set_down(str(e))
            if down:
                # slurmctld is not answering: a job that was submitted is still somewhere; hold it as
                # running (``wait`` follows it once the controller answers), or make sure it never runs.
                if base is None:
                    out[ref.task_id] = Probe(state="never_started")
                elif handle.get("job") or not _claim(f"{base}.claim", {"by": "service", "reason": "recovery"}):
                    handle.update({"kind": "slurm", "executor": self.name})
                    out[ref.task_id] = Probe(state="running", handle=handle, log_start=handle.get("log_start"))
                else:
                    Path(f"{base}.spec").unlink(missing_ok=True)
                    out[ref.task_id] = Probe(state="never_started", handle=handle)
                continue
            assert listing is not None
            if not handle.get("job") and not by_name:
                by_name = await self._names()  # only for a run whose job id was never recorded
            job_id = handle.get("job") or by_name.get(job_name(ref.task_id))
            row = listing.get(str(job_id)) if job_id else None
            if row is not None and row[0] in ACTIVE:
                handle.update({"kind": "slurm", "executor": self.name, "job": str(job_id)})
                out[ref.task_id] = Probe(state="running", handle=handle, log_start=handle.get("log_start"))
                continue
            if base is None:
                # Died inside start before the handle was stored, and no job of that name: nothing runs.
                out[ref.task_id] = Probe(state="never_started")
                continue
            out[ref.task_id] = self._ended(handle, row)
        return out

    def _find_base(self, ref: RunRef) -> str | None:
        found = sorted(self.runs_dir.glob(f"{ref.task_id}.{ref.attempt}.*.spec")) + \
            sorted(self.runs_dir.glob(f"{ref.task_id}.{ref.attempt}.*.claim"))
        return str(found[0]).rsplit(".", 1)[0] if found else None

    async def _names(self) -> dict[str, str]:
        rc, out, _err = await self._cmd(["squeue", "--noheader", f"--user={self.user}", "--Format=Name:|,JobID:"])
        if rc != 0:
            return {}
        res = {}
        for line in out.splitlines():
            name, _, jid = line.partition("|")
            if name.strip():
                res[name.strip()] = jid.strip()
        return res

    def _ended(self, handle: Handle, row: tuple[str, int | None, str] | None) -> Probe:
        """The job is no longer active: its exit record, else what Slurm says, else claim it so it never runs."""
        base = handle["run"]
        rec = _read_json(Path(f"{base}.exit"))
        if rec is not None:
            return Probe(state="finished", handle=handle, exit=exit_info(rec), log_start=handle.get("log_start"))
        if _claim(f"{base}.claim", {"by": "service", "reason": "job ended or vanished before running"}):
            Path(f"{base}.spec").unlink(missing_ok=True)
            return Probe(state="never_started", handle=handle)
        state = row[0] if row else "gone"
        info = self._synth_exit(handle, state, row[1] if row else None)
        return Probe(state="lost" if info.error else "finished", handle=handle, exit=info,
                     log_start=handle.get("log_start"))

    def _synth_exit(self, handle: Handle, state: str, raw: int | None) -> ExitInfo:
        """No exit record (the runner was killed): what Slurm's own state tells."""
        size = None
        with contextlib.suppress(OSError, TypeError):
            size = os.stat(_log_of(handle)).st_size if _log_of(handle) else None
        if state == "TIMEOUT":
            return ExitInfo(timed_out=True, signal=9, log_bytes=size)
        if state in ("CANCELLED", "PREEMPTED", "DEADLINE"):
            return ExitInfo(signal=15, log_bytes=size, error=None if state == "CANCELLED" else f"job {state.lower()}")
        code = (raw >> 8) if raw is not None else None
        return ExitInfo(exit_code=code, log_bytes=size,
                        error=f"Slurm job {handle.get('job')} ended {state} without the runner's exit record")

    # -- wait / cancel ---------------------------------------------------------------------------------------------
    async def wait(self, handle: Handle) -> ExitInfo:
        base = handle["run"]
        exit_path = Path(f"{base}.exit")
        while not handle.get("job"):
            # Adopted while slurmctld was down, before the job id was recorded: learn it by name.
            exited = self.poller.exit_event(exit_path.name)
            try:
                rec = _read_json(exit_path)
                if rec is not None:
                    return exit_info(rec)
                with contextlib.suppress(ExecutorError):
                    found = (await self._names()).get(job_name(Path(base).name.split(".")[0]))
                    if found:
                        handle["job"] = found
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), self.cfg.poll_max_seconds)
            finally:
                self.poller.drop_exit_event(exit_path.name)
        job_id = str(handle["job"])
        job = self.poller.watch(job_id)
        log_path = _log_of(handle)
        if log_path and self.cfg.log_poll_seconds:
            self.poller.watch_log(log_path)
        try:
            grace_ticks = 0
            while True:
                exited = self.poller.exit_event(exit_path.name)  # before the read: no lost wake-up
                rec = _read_json(exit_path)
                if rec is not None:
                    return exit_info(rec)
                if job.state is not None and job.state not in ACTIVE:
                    # Ended: the record may trail on a shared filesystem; give it a few ticks.
                    grace_ticks += 1
                    if grace_ticks > 3:
                        probe = self._ended(handle, (job.state, job.exit_code, job.reason)
                                            if job.state != "GONE" else None)
                        if probe.exit is not None:
                            return probe.exit
                        if job.state == "CANCELLED":  # cancelled while pending: never ran
                            return ExitInfo(signal=15)
                        return ExitInfo(error=f"Slurm job {job_id} ended {job.state} before the agent started")
                tick = asyncio.ensure_future(self.poller.next_tick())
                await asyncio.wait([tick, exited], return_when=asyncio.FIRST_COMPLETED)
                tick.cancel()
        finally:
            self.poller.drop_exit_event(exit_path.name)
            self.poller.unwatch(job_id)
            if log_path:
                self.poller.unwatch_log(log_path)
            timer = self._kill_later.pop(job_id, None)
            if timer is not None:
                timer.cancel()

    async def cancel(self, handle: Handle, *, grace_s: float = 5.0) -> None:
        job_id = str(handle.get("job") or "")
        if not job_id:
            return
        job = self.poller.jobs.get(job_id)
        try:
            if job is not None and job.state == "RUNNING":
                # The runner gets SIGTERM, stops the agent's group (SIGKILL after its grace) and records it.
                await self._cmd(["scancel", "--batch", "--signal=TERM", job_id])
                loop = asyncio.get_running_loop()

                def hard_cancel() -> None:
                    self._kill_later.pop(job_id, None)
                    task = loop.create_task(self._scancel(job_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

                self._kill_later[job_id] = loop.call_later(grace_s + 10, hard_cancel)
            else:
                await self._scancel(job_id)
        except ExecutorError as e:
            log.warning("cancelling Slurm job %s: %s", job_id, e)
        self.poller.kick()

    async def _scancel(self, job_id: str) -> None:
        with contextlib.suppress(ExecutorError):
            rc, _out, err = await self._cmd(["scancel", job_id])
            if rc != 0:
                log.warning("scancel %s: %s", job_id, err)

    async def forget(self, handle: Handle) -> None:
        base = handle.get("run")
        if not base:
            raise ExecutorError("not a slurm handle (no 'run')")
        for suffix in (".spec", ".claim", ".exit"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)

    async def close(self) -> None:
        for timer in self._kill_later.values():
            timer.cancel()
        self._kill_later.clear()
        for task in (self.poller._task, self.poller._log_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _log_of(handle: Handle) -> str | None:
    v = handle.get("log")
    return v if isinstance(v, str) else None


def _sh(s: str) -> str:
    import shlex

    return shlex.quote(s)
