"""The agent runner: runs one task attempt so that it outlives the service.

Run as ``python -I -S runner.py [--detach] SPEC`` (stdlib only, nothing imported from the package,
so it starts in a few milliseconds and works from any interpreter).  Under systemd it is the main
process of the task's transient unit; outside systemd ``--detach`` forks it into its own session,
prints its pid and returns at once.

What it does, in order:

1. **Claims the attempt** by creating ``<run>.claim`` with ``O_EXCL``.  Recovery after a crash does
   the same when it finds no trace of a run; whoever creates the file first wins, so an attempt
   runs at most once even if the service died while launching it.
2. Reads the spec (argv, cwd, env, log path, limits) and deletes it (it may hold secrets).
3. Starts the agent in its own process group with the prompt on stdin (an anonymous file: no size
   limit, unlike argv) and stdout+stderr on a pipe, and copies the pipe to
   the log (up to the cap; then it drains), re-creating the log if it was deleted underneath.
4. Enforces the timeout itself (SIGTERM the group, SIGKILL after the grace), so a run cannot
   outlive its limit while the service is down; SIGTERM to the runner does the same (cancel).  Both
   hold until the agent exits, also after it closed its stdout and stderr.
5. When the agent exits, sweeps its group, drains the pipe and writes ``<run>.exit`` atomically:
   exit status, signal, timeout, and ``log_bytes`` (the log's size at the end of the stream).
"""

from __future__ import annotations

import errno
import marshal
import os
import select
import signal
import sys
import time

# Deliberately few imports (no json, subprocess, contextlib: they pull in re, threading, collections):
# the runner's start-up is part of every task's start.  The spec comes as marshal (written by the
# same interpreter); the claim and exit records go out as JSON through ``_json`` below.

CLAIM_LOST = 75  # EX_TEMPFAIL: someone else (recovery) claimed this attempt first
DRAIN_S = 2.0
CHUNK = 1 << 16
DROPPED_KEEP = 1 << 16


def _utc(ts: float) -> str:
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(ts * 1000) % 1000:03d}Z"


def _identity(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return f"{boot}:{int(fields[19])}"


def _json(v: object) -> str:
    """JSON for the flat records we write (str, int, float, bool, None, and dicts of them)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_json(str(k))}: {_json(x)}" for k, x in v.items()) + "}"
    out = ['"']
    for ch in str(v):
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20 or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def write_bytes_atomic(path: str, data: bytes, *, durable: bool = True) -> None:
    """temp file, (fsync), rename, (fsync the directory): readers see all of it or nothing."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_json_atomic(path: str, data: dict, *, durable: bool = True) -> None:
    write_bytes_atomic(path, _json(data).encode(), durable=durable)


def claim(path: str, record: dict) -> bool:
    """Create ``path`` exclusively with ``record``; False if it already exists.  (Not fsynced: it
    only has to outlive the service, not the machine; after a reboot no run is alive anyway.)"""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, _json(record).encode())
    finally:
        os.close(fd)
    return True


class _Log:
    """The task's log, append-only, capped; re-created (with a note) if deleted while running."""

    def __init__(self, path: str, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.written = 0
        self.truncated = False
        self.failed = False
        #: The end of what was discarded past the cap: the stream's final result line is there.
        self.dropped = bytearray()
        self.fd = self._open()
        self.start = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def note(self, text: str) -> None:
        try:  # noqa: SIM105 - contextlib costs start-up time here
            self._raw(f"\n[aiwg: {text}]\n".encode())
        except OSError:
            pass

    def write(self, data: bytes) -> None:
        if self.truncated or self.failed:
            self.dropped += data
            if len(self.dropped) > 2 * DROPPED_KEEP:
                del self.dropped[:-DROPPED_KEEP]
            return
        try:
            if os.fstat(self.fd).st_nlink == 0:  # deleted under us: keep the output where it is looked for
                os.close(self.fd)
                self.fd = self._open()
                self.note("the log file was deleted while the task ran; output continues here")
            room = self.cap - self.written
            if len(data) <= room:
                self._raw(data)
                self.written += len(data)
            else:
                self._raw(data[:room])
                self.written = self.cap
                self.truncated = True
                self.dropped += data[room:]
                self.note(f"output truncated at {self.cap // (1024 * 1024)} MB; the rest was read and discarded")
        except OSError as e:  # ENOSPC: keep draining so the agent never blocks on the pipe
            self.failed = True
            sys.stderr.write(f"aiwg runner: log write failed, output no longer logged: {e}\n")

    def size(self) -> int | None:
        try:
            return os.fstat(self.fd).st_size if os.fstat(self.fd).st_nlink else None
        except OSError:
            return None


def _killpg(pgid: int, sig: int) -> None:
    try:  # noqa: SIM105 - contextlib costs start-up time here
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _which(name: str, path: str | None) -> str | None:
    if "/" in name:
        return name
    for d in (path or "/usr/local/bin:/usr/bin:/bin").split(":"):
        cand = os.path.join(d or ".", name)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    return None


def _spawn(spec: dict, wfd: int) -> int:
    """The agent in its own session, stdin the spec's ``stdin`` (else /dev/null), stdout+stderr on
    ``wfd``, in the spec's cwd with its umask and env.  posix_spawn: no subprocess import, no Python
    between fork and exec."""
    argv = list(spec["argv"])
    env = dict(spec["env"])
    exe = _which(argv[0], env.get("PATH"))
    if exe is None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv[0])
    os.chdir(spec["cwd"])  # inherited by the child (posix_spawn has no chdir before 3.13)
    if spec.get("umask") is not None:
        os.umask(int(spec["umask"]))
    data = spec.get("stdin")
    stdin = _stdin_fd(data.encode() if isinstance(data, str) else data, spec.get("_dir") or ".") \
        if data is not None else None
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0) if stdin is None
               else (os.POSIX_SPAWN_DUP2, stdin, 0),
               (os.POSIX_SPAWN_DUP2, wfd, 1), (os.POSIX_SPAWN_DUP2, wfd, 2)]
    # Python ignores SIGPIPE/SIGXFSZ and we ignore SIGHUP: the agent gets the defaults back.
    try:
        return os.posix_spawn(exe, argv, env, file_actions=actions, setsid=True,
                              setsigdef=(signal.SIGPIPE, signal.SIGHUP, signal.SIGXFSZ))
    finally:
        if stdin is not None:
            os.close(stdin)


def _stdin_fd(data: bytes, where: str) -> int:
    """The agent's stdin: the prompt in an anonymous file (any size: argv stops at 128 KiB per word),
    read from its start.  memfd where there is one, else an unlinked file beside the spec."""
    try:
        fd = os.memfd_create("aiwg-prompt", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        path = os.path.join(where, f".stdin.{os.getpid()}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.unlink(path)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run(spec_path: str, waiter: int | None = None, unit: str | None = None) -> int:
    """``waiter``: the agent is already running (started by the shim, see ``shim.py``, which claimed the
    run and then became this process), its output on ``<run>.fifo``, its status to come in ``<run>.rc``
    from the ``waiter`` subshell; otherwise claim and start the agent here."""
    base = spec_path[: -len(".spec")] if spec_path.endswith(".spec") else spec_path
    claim_path, exit_path = base + ".claim", base + ".exit"
    # Signals first: a cancel that arrives while we start must still be recorded, not kill us.
    stop: dict[str, int | None] = {"sig": None}

    def on_term(signum: int, _frame: object) -> None:
        stop["sig"] = signum

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    me = {"by": "runner", "pid": os.getpid(), "ident": _identity(os.getpid()),
          "unit": unit or os.environ.get("AIWG_UNIT") or None}
    if waiter is None and not claim(claim_path, me):
        return CLAIM_LOST
    rfd = -1
    child: int | None = None
    if waiter is not None:  # the shim's end of the agent's output: read it here, hold no writer
        try:
            rfd = os.open(base + ".fifo", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        finally:
            try:  # noqa: SIM105 - contextlib costs start-up time here
                os.close(3)
            except OSError:
                pass
            for suffix in (".fifo", ".sh", ".stdin"):
                try:  # noqa: SIM105
                    os.unlink(base + suffix)
                except OSError:
                    pass
    try:
        with open(spec_path, "rb") as f:
            spec = marshal.loads(f.read())
        if not isinstance(spec, dict):
            raise ValueError("not a run spec")
        spec["_dir"] = os.path.dirname(os.path.abspath(spec_path))
    except (OSError, ValueError, EOFError, TypeError) as e:
        agent = _agent_pid(base, waiter) if waiter is not None else None
        if agent is not None:
            _killpg(agent, signal.SIGKILL)
        write_json_atomic(exit_path, {"error": f"cannot read the run's spec {spec_path}: {e}",
                                      "finished_at": _utc(time.time())})
        return 1
    finally:
        try:  # noqa: SIM105 - contextlib costs start-up time here
            os.unlink(spec_path)
        except OSError:
            pass
    log = _Log(spec["log_path"], int(spec.get("max_output_bytes") or 10 * 1024 * 1024))
    grace = float(spec.get("kill_grace_s") or 5.0)
    timeout = spec.get("timeout_s")

    if waiter is not None:
        child = _agent_pid(base, waiter)
        if child is None:
            write_json_atomic(exit_path, {"error": "the agent's shim ended before it started the agent",
                                          "log_bytes": log.size(), "finished_at": _utc(time.time())})
            return 1
    else:
        rfd, wfd = os.pipe()
        try:
            child = _spawn(spec, wfd)
        except OSError as e:
            msg = f"cannot start agent {spec['argv'][0]!r}: {e.strerror or e}"
            log.note(msg)
            write_json_atomic(exit_path, {"error": msg, "exit_code": 127, "log_bytes": log.size(),
                                          "finished_at": _utc(time.time()), "spawn_failed": True})
            return 1
        os.close(wfd)
    write_json_atomic(claim_path, {**me, "child": child, "log_start": log.start}, durable=False)
    # What says the agent ended: its own pidfd (our child), or the waiter's (the shim's subshell, which
    # may be gone already: then its status file is all there is).
    watched = child if waiter is None else waiter
    try:
        pidfd: int | None = os.pidfd_open(watched)
    except ProcessLookupError:
        pidfd = None
    os.set_blocking(rfd, False)

    def ended() -> int:
        if waiter is None:
            return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        try:  # noqa: SIM105
            os.waitpid(waiter, 0)
        except ChildProcessError:  # the shell reaped it before it became us
            pass
        return _waiter_status(base)

    deadline = time.monotonic() + float(timeout) if timeout else None
    kill_at: float | None = None
    timed_out = False
    rc: int | None = None
    eof = False
    drain_until: float | None = None
    # Until the agent has exited AND its output is drained.  The deadline and the stop signal are
    # watched the whole time, also after the agent closed its stdout/stderr (EOF) while running on.
    while True:
        now = time.monotonic()
        if rc is None:
            if stop["sig"] is not None and kill_at is None:
                _killpg(child, signal.SIGTERM)
                kill_at = now + grace
            if deadline is not None and now >= deadline and kill_at is None:
                timed_out = True
                _killpg(child, signal.SIGTERM)
                kill_at = now + grace
            if kill_at is not None and now >= kill_at:
                _killpg(child, signal.SIGKILL)
                kill_at = float("inf")
        elif eof:
            break
        elif drain_until is not None and now >= drain_until:
            log.note("output still open after the agent exited; stopped reading")
            break
        waits = [t for t in (deadline if kill_at is None else None, kill_at, drain_until) if t is not None]
        wait = max(0.0, min(waits) - now) if waits and min(waits) != float("inf") else None
        if rc is None and pidfd is None:  # the waiter was gone before we looked
            rc = ended()
            _killpg(child, signal.SIGKILL)
            drain_until = time.monotonic() + DRAIN_S
            continue
        fds = ([] if eof else [rfd]) + [wake_r] + ([pidfd] if rc is None and pidfd is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], wait)
        except InterruptedError:
            continue
        if wake_r in ready:
            try:  # noqa: SIM105 - contextlib costs start-up time here
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if rfd in ready:
            try:
                data = os.read(rfd, CHUNK)
            except BlockingIOError:
                data = None
            except OSError as e:
                if e.errno != errno.EINTR:
                    raise
                data = None
            if data == b"":
                eof = True
            elif data:
                log.write(data)
        if rc is None and pidfd in ready:
            rc = ended()
            # The leader is gone: whatever is left of its group goes with it (grandchildren that
            # kept the pipe open), then we read what remains.
            _killpg(child, signal.SIGKILL)
            drain_until = time.monotonic() + DRAIN_S
    if pidfd is not None:
        os.close(pidfd)
    info = {
        "exit_code": rc if rc >= 0 else None,
        "signal": -rc if rc < 0 else None,
        "timed_out": timed_out,
        "log_bytes": log.size(),
        "truncated": log.truncated,
        "finished_at": _utc(time.time()),
    }
    if log.dropped:
        tail = bytes(log.dropped[-DROPPED_KEEP:])
        if len(log.dropped) > DROPPED_KEEP:
            tail = tail[tail.find(b"\n") + 1:]  # whole lines only
        info["stream_tail"] = tail.decode("utf-8", "replace")
    write_json_atomic(exit_path, info)
    return 0


def _agent_pid(base: str, waiter: int) -> int | None:
    """The agent's pid, as the waiter wrote it (a moment after it forked; None if it never did)."""
    end = time.monotonic() + 5.0
    while True:
        try:
            with open(base + ".child", "rb") as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() > end or not os.path.exists(f"/proc/{waiter}"):
            return None
        select.select([], [], [], 0.001)


def _waiter_status(base: str) -> int:
    """The agent's status from ``<run>.rc`` as ``waitstatus_to_exitcode`` would give it (-N: signal N).
    Missing: the waiter was killed; reported as SIGKILL."""
    try:
        with open(base + ".rc", "rb") as f:
            status = int(f.read().strip())
    except (OSError, ValueError):
        return -signal.SIGKILL
    return -(status - 128) if status > 128 else status


def main(argv: list[str]) -> int:
    detach = "--detach" in argv
    waiter = unit = None
    args = []
    for a in argv:
        if a.startswith("--waiter="):
            waiter = int(a[9:])
        elif a.startswith("--unit="):
            unit = a[7:] or None
        elif a != "--detach":
            args.append(a)
    if len(args) != 1:
        sys.stderr.write("usage: runner.py [--detach] [--waiter=PID [--unit=NAME]] SPEC\n")
        return 2
    if waiter is not None:
        return run(args[0], waiter, unit)
    if detach:
        pid = os.fork()
        if pid:
            sys.stdout.write(f"{pid}\n")
            sys.stdout.flush()
            return 0
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Whatever else the launcher inherited (an event loop's pipe ends) must not be held open:
        # the service waits for the launcher's stdout to close.
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") < 65536 else 65536)
        try:
            code = run(args[0])
        except BaseException:  # nowhere to report: the service sees a missing exit file
            code = 1
        os._exit(code)
    return run(args[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
