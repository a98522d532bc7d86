"""Conditions: field tests (the AIWG daemon's operators), match, time windows, shell commands, not/any/all.

Field, match and time conditions are synchronous and cheap, so a rule made only of them is decided inline on
the bus handler without a task. Shell conditions are real subprocesses in their own process group (so a timeout
or a cancelled run kills the whole tree), with the event as environment variables and as JSON on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ..childenv import sanitized
from ..policy import identity
from ..protocol import Event
from .matching import MISSING, get_field
from .regexes import RegexTimeout, UserRegex

OUTPUT_CAP = 4096  # bytes of stdout/stderr kept per stream
TRACE_LINES = 20
KILL_GRACE = 0.5
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(slots=True)
class Ctx:
    """What a run knows: the event, where it runs, and who it is (for env vars, templates and origins)."""

    event: Event
    project: str
    rule_id: str
    run_id: str
    paths: list[str] = field(default_factory=list)
    #: variables of the service's environment the rule asked for by name (its ``env`` list)
    env_names: tuple[str, ...] = ()
    #: causal depth of the triggering event (0: from outside; +1 for each rule run in between)
    depth: int = 0
    #: the engine's cap on rule subprocesses, shared by every run
    gate: ProcessGate | None = None
    approval_id: str | None = None  # set when the run resumes after an approval, for task origins

    def env(self) -> dict[str, str]:
        """The allow-listed environment (as agents get), the rule's own names, and the event as AIWG_* vars."""
        ev = self.event
        d = ev.data
        return {
            **sanitized(self.env_names),
            "AIWG_EVENT_TYPE": ev.type,
            "AIWG_EVENT_ID": ev.id,
            "AIWG_EVENT_SOURCE": ev.source,
            "AIWG_EVENT_PROJECT": ev.project or "",
            "AIWG_EVENT_PATH": self.paths[0] if self.paths else str(d.get("path", "")),
            "AIWG_EVENT_PATHS": "\n".join(self.paths),
            "AIWG_EVENT_JSON": msgspec.json.encode(ev).decode(),
            "AIWG_PROJECT": self.project,
            "AIWG_RULE_ID": self.rule_id,
            "AIWG_RUN_ID": self.run_id,
            **identity.child_env("rule", self.project, self.run_id),  # its calls back to the socket are confined
        }


# -- the shell runner (conditions and actions) -------------------------------------------------------------


class ProcessGate:
    """At most ``limit`` rule subprocesses at once, across every rule; the rest wait their turn in order.

    One file event can trigger hundreds of rules (or one rule in parallel mode hundreds of times): without a
    global cap each would fork its shell at once. Release is synchronous, so a cancelled run gives its slot
    back even while its cancellation unwinds.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.running < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.running += 1
                fut.set_result(None)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # granted: running already counts us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled before we could use it
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.running -= 1
        self._grant()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one slot; yields how long the wait was (seconds)."""
        t0 = time.monotonic()
        await self.acquire()
        try:
            yield time.monotonic() - t0
        finally:
            self.release()


async def _read_capped(stream: asyncio.StreamReader | None, buf: bytearray) -> None:
    if stream is None:
        return
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        if len(buf) < OUTPUT_CAP:
            buf.extend(chunk[: OUTPUT_CAP - len(buf)])


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def head(data: bytes) -> str:
    text = data.decode(errors="replace")
    lines = text.splitlines()
    return "\n".join(lines[:TRACE_LINES]) + ("\n..." if len(lines) > TRACE_LINES else "")


#: The umask a rule's command runs with, whatever the service's own (the unit's UMask=0077 keeps the daemon's
#: files private; a command must create ordinary files in the project, as the user's shell would).
COMMAND_UMASK = 0o022


@functools.cache
def service_umask() -> int | None:
    """This process's umask, read without changing it (``Umask:`` in /proc/self/status); it never changes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def shell_argv(cmd: str) -> list[str]:
    """``sh -c CMD``, through a shell that sets umask 0022 first when the service runs with another one.

    The outer shell execs the inner one, so the pid and process group stay the command's (uvloop's spawn has
    no ``umask=``, and changing the service's own umask around a spawn would race its other threads).
    """
    if service_umask() in (None, COMMAND_UMASK):
        return ["/bin/sh", "-c", cmd]
    return ["/bin/sh", "-c", f'umask {COMMAND_UMASK:04o} && exec /bin/sh -c "$1"', "sh", cmd]


async def run_shell(cmd: str, ctx: Ctx, timeout: float | None) -> dict[str, Any]:
    """Run ``cmd`` with ``sh -c`` in the project root, in a new session, within the engine's process cap.

    On timeout or cancellation the whole process group gets SIGTERM, then SIGKILL after a short grace, so
    nothing the command started outlives it. Output is capped; the trace keeps the first lines.
    """
    if ctx.gate is None:
        return await _run_shell(cmd, ctx, timeout)
    async with ctx.gate.slot() as waited:
        res = await _run_shell(cmd, ctx, timeout)
    if waited >= 0.001:
        res["waited_ms"] = round(waited * 1000, 1)
    return res


async def _run_shell(cmd: str, ctx: Ctx, timeout: float | None) -> dict[str, Any]:
    t0 = time.monotonic()
    creating = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *shell_argv(cmd), cwd=ctx.project if os.path.isdir(ctx.project) else None, env=ctx.env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True))
    try:
        # shielded: a run cancelled while asyncio is still wiring up the pipes would otherwise leave the
        # shell's group running (asyncio kills the shell alone, and may then wait for it forever)
        proc = await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            started = await creating
            _killpg(started.pid, signal.SIGKILL)
            await asyncio.wait_for(started.wait(), 2.0)
        raise
    out, err = bytearray(), bytearray()
    timed_out = False
    readers = asyncio.gather(_read_capped(proc.stdout, out), _read_capped(proc.stderr, err))
    try:
        if proc.stdin is not None:
            # a command that never reads stdin may exit before we write; uvloop then reports the closed pipe
            # as RuntimeError ("handler is closed") rather than BrokenPipeError: either way, nothing to feed
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
                proc.stdin.write(msgspec.json.encode(ctx.event))
                await proc.stdin.drain()
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            _killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), KILL_GRACE)
            except TimeoutError:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # whatever the command left running in its group would hold our pipes open: end it
        _killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(readers), 2.0)
    except BaseException:
        # cancelled (restart mode, shutdown): kill the whole tree even if the shell itself is already gone,
        # since what it started in the background is still in its group
        _killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        if proc.returncode is None:  # reap the shell
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(proc.wait(), 2.0)
        if not readers.done():
            readers.cancel()
        readers.add_done_callback(lambda f: f.cancelled() or f.exception())
    return {
        "command": cmd,
        "exit": proc.returncode,
        "timed_out": timed_out,
        "duration_ms": round((time.monotonic() - t0) * 1000, 1),
        "pid": proc.pid,
        "stdout": head(bytes(out)),
        "stderr": head(bytes(err)),
    }


# -- conditions ------------------------------------------------------------------------------------------


class Condition:
    """``is_sync`` conditions answer ``check`` immediately; every condition answers ``acheck``."""

    is_sync = True
    kind = "condition"

    def check(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    async def acheck(self, ctx: Ctx) -> dict[str, Any]:
        return self.check(ctx)


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _eq(a: Any, b: Any) -> bool:
    if a == b and type(a) is not bool and type(b) is not bool:
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or str(a).lower() == str(b).lower()
    if isinstance(a, str) != isinstance(b, str):  # "3" == 3, as the AIWG daemon's JSON-ish rules expect
        return str(a) == str(b)
    return False


OPERATORS = ("eq", "equals", "neq", "not_equals", "contains", "matches", "gt", "lt", "gte", "lte", "exists",
             "not_exists")


class FieldCondition(Condition):
    """The AIWG daemon's ``{field, operator, value}``."""

    kind = "field"

    def __init__(self, fld: str, op: str, value: Any, rx: UserRegex | None = None) -> None:
        self.field, self.op, self.value, self.rx = fld, op, value, rx

    def test(self, actual: Any) -> bool:
        op, want = self.op, self.value
        if op in ("exists", "not_exists"):
            present = actual is not MISSING and actual is not None
            return present if op == "exists" else not present
        if actual is MISSING:
            return op in ("neq", "not_equals")
        if op in ("eq", "equals"):
            return _eq(actual, want)
        if op in ("neq", "not_equals"):
            return not _eq(actual, want)
        if op == "contains":
            if isinstance(actual, str):
                return str(want) in actual
            if isinstance(actual, list | dict):
                return want in actual
            return False
        if op == "matches":
            text = actual if isinstance(actual, str) else str(actual)
            return self.rx is not None and self.rx.search(text)
        a, b = _num(actual), _num(want)
        if a is None or b is None:
            return False
        return {"gt": a > b, "lt": a < b, "gte": a >= b, "lte": a <= b}[op]

    def check(self, ctx: Ctx) -> dict[str, Any]:
        actual = get_field(ctx.event, self.field)
        out = {"kind": "field", "field": self.field, "operator": self.op, "value": self.value,
               "actual": None if actual is MISSING else actual}
        try:
            out["ok"] = self.test(actual)
        except RegexTimeout as exc:
            out.update(ok=False, error=str(exc), timed_out=True)
        return out


class MatchCondition(Condition):
    """``{match: {field, equals|glob|regex}}``."""

    kind = "match"

    def __init__(self, fld: str, how: str, value: Any, compiled: Any = None) -> None:
        self.field, self.how, self.value, self.compiled = fld, how, value, compiled

    def check(self, ctx: Ctx) -> dict[str, Any]:
        if self.field in ("path", "data.path", "payload.path") and ctx.paths:
            actuals: list[Any] = list(ctx.paths)
        else:
            actuals = [get_field(ctx.event, self.field)]
        ok = False
        error = None
        for actual in actuals:
            if actual is MISSING:
                continue
            if self.how == "equals":
                ok = _eq(actual, self.value)
            elif self.how == "glob":
                ok = isinstance(actual, str) and self.compiled.matches(actual)
            else:
                try:
                    ok = self.compiled.search(actual if isinstance(actual, str) else str(actual))
                except RegexTimeout as exc:
                    ok, error = False, str(exc)
                    break  # the budget is spent: the other paths of a batch would time out too
            if ok:
                break
        shown = actuals[0] if len(actuals) == 1 else actuals
        out = {"kind": "match", "field": self.field, self.how: self.value,
               "actual": None if shown is MISSING else shown, "ok": ok}
        if error:
            out.update(error=error, timed_out=True)
        return out


class TimeCondition(Condition):
    """``{time: {weekdays, hours: "09:00-18:00", tz}}``; an hours range may wrap midnight."""

    kind = "time"

    def __init__(self, weekdays: set[int] | None, start: int | None, end: int | None, tz: Any, text: dict[str, Any],
                 now: Any = None) -> None:
        self.weekdays, self.start, self.end, self.tz, self.text = weekdays, start, end, tz, text
        self.now = now or (lambda tz: datetime.now(tz))

    def check(self, ctx: Ctx) -> dict[str, Any]:
        now = self.now(self.tz)
        ok = True
        if self.weekdays is not None and now.weekday() not in self.weekdays:
            ok = False
        if ok and self.start is not None and self.end is not None:
            m = now.hour * 60 + now.minute
            ok = self.start <= m < self.end if self.start <= self.end else (m >= self.start or m < self.end)
        return {"kind": "time", **self.text, "now": now.isoformat(timespec="minutes"), "ok": ok}


class ShellCondition(Condition):
    """``{shell, timeout_seconds, expect}``: passes on exit 0, or on non-zero with ``expect: "fail"``."""

    is_sync = False
    kind = "shell"

    def __init__(self, cmd: str, timeout: float, expect: str) -> None:
        self.cmd, self.timeout, self.expect = cmd, timeout, expect

    def check(self, ctx: Ctx) -> dict[str, Any]:  # pragma: no cover - never sync
        raise RuntimeError("shell conditions are async")

    async def acheck(self, ctx: Ctx) -> dict[str, Any]:
        res = await run_shell(self.cmd, ctx, self.timeout)
        ok = False if res["timed_out"] else (res["exit"] == 0) == (self.expect == "success")
        return {"kind": "shell", "expect": self.expect, **res, "ok": ok}


class Not(Condition):
    kind = "not"

    def __init__(self, inner: Condition) -> None:
        self.inner = inner
        self.is_sync = inner.is_sync

    def check(self, ctx: Ctx) -> dict[str, Any]:
        r = self.inner.check(ctx)
        return {"kind": "not", "inner": r, "ok": not r["ok"]}

    async def acheck(self, ctx: Ctx) -> dict[str, Any]:
        r = await self.inner.acheck(ctx)
        return {"kind": "not", "inner": r, "ok": not r["ok"]}


class Group(Condition):
    """``any`` / ``all``: evaluated in order, stopping at the first deciding result (so a cheap test can guard
    an expensive shell condition)."""

    def __init__(self, kind: str, items: list[Condition]) -> None:
        self.kind, self.items = kind, items
        self.is_sync = all(c.is_sync for c in items)

    def _done(self, ok: bool) -> bool:
        return ok if self.kind == "any" else not ok

    def check(self, ctx: Ctx) -> dict[str, Any]:
        results = []
        for c in self.items:
            r = c.check(ctx)
            results.append(r)
            if self._done(r["ok"]):
                break
        return self._result(results)

    async def acheck(self, ctx: Ctx) -> dict[str, Any]:
        results = []
        for c in self.items:
            r = await c.acheck(ctx)
            results.append(r)
            if self._done(r["ok"]):
                break
        return self._result(results)

    def _result(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        ok = any(r["ok"] for r in results) if self.kind == "any" else all(r["ok"] for r in results)
        return {"kind": self.kind, "results": results, "ok": ok}
