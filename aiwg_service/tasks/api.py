"""The ``task.*`` RPC methods, and the hub that fans task events out.

Compatible with the AIWG daemon's clients: ``task.submit {prompt, agent?, priority?}`` answers
``{taskId, state}`` (plus every task field), ``task.get`` of an unknown id is -32602,
``task.cancel`` answers ``{cancelled}``, ``task.stats`` has ``total/queued/running/completed/failed/
cancelled``.  (``chat.send`` lives in ``chat/``: a chat message is a turn of a conversation.)

Nothing here polls: ``task.submit {wait: true}`` and ``task.logs {follow: true}`` hang off the
:class:`TaskHub`, which sees every state transition (the store's ``emit``) and every byte the
supervisor appends to a log (its ``on_output``) as it happens.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import protocol as p
from ..executors.base import ExecutorError
from ..rpc import Connection, RpcServer
from .model import FINISHED_STATES, Task, TaskSource, TaskState, split_agent
from .store import Store, StoreError
from .supervisor import Supervisor

__all__ = ["TaskHub", "register"]

log = logging.getLogger(__name__)

_FINAL_EVENTS = frozenset(f"task.{s.value}" for s in FINISHED_STATES)
#: A follower sends the log in chunks while its connection has room (the connection's byte budget);
#: when it has none, it waits and resumes from the log file (the source of truth) once the client
#: reads again, so nothing is lost and nothing is buffered twice.
_CHUNK = 128 * 1024
#: ``task.list`` stops adding tasks past about this many bytes (long prompts), so one reply stays
#: inside a connection's budget; the client pages on with ``before`` = the last id it got.
LIST_BYTES = 512 * 1024
#: Fields of a task that grow with client input; the rest add about this much each.
_TASK_OVERHEAD = 1024
_LIST_PAGE = 100


def task_result(task: Task) -> dict[str, Any]:
    """A task as clients see it: every field, plus the AIWG daemon's names for them beside ours (``taskId``,
    ``output``, ``metadata`` and the camelCase times its CLI reads)."""
    d = task.to_dict()
    d["taskId"] = task.id
    d["output"] = task.result
    d["metadata"] = {"source": task.source.value, "agent": task.subagent or task.agent, "project": task.project,
                     "origin": task.origin}
    d["createdAt"] = task.created_at
    d["startedAt"] = task.started_at
    d["completedAt"] = task.finished_at
    d["exitCode"] = task.exit_code
    return d


def _utf8_boundary(data: bytes) -> int:
    """Length of ``data`` without a trailing incomplete UTF-8 sequence (so offsets stay on characters)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b < 0x80:
            return len(data)
        if b >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


class _Follower:
    """One ``task.logs {follow: true}`` stream: ``offset`` is the next byte of the log to send."""

    def __init__(self, hub: TaskHub, conn: Connection, task_id: str, path: Path, offset: int) -> None:
        self.hub = hub
        self.conn = conn
        self.task_id = task_id
        self.path = path
        self.offset = offset
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.lagging = False
        self.final_state: str | None = None  # set once the task finished: the last message is owed
        self._armed = False

    def _send(self, data: bytes) -> None:
        self.offset += len(data)
        text = self.decoder.decode(data)
        if text:
            self.conn.notify(p.NOTIFY_TASK_OUTPUT, {"taskId": self.task_id, "data": text, "offset": self.offset})

    def _wait_for_room(self) -> None:
        self.lagging = True
        if not self._armed:
            self._armed = True
            self.conn.when_writable(self._resume)

    def _resume(self) -> None:
        self._armed = False
        if self.conn.is_closing:
            return
        if self.final_state is not None:
            self.done(self.final_state)
        else:
            self.catch_up()

    def catch_up(self) -> bool:
        """Send what the log holds beyond ``offset`` while the connection has room (start-up backlog,
        or after lagging). False if it ran out of room: it goes on by itself once the client reads."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while not self.conn.is_closing:
                    if not self.conn.writable:
                        self._wait_for_room()
                        return False
                    data = f.read(_CHUNK)
                    if not data:
                        break
                    self._send(data)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("task %s: cannot read its log for a follower: %s", self.task_id, exc)
        self.lagging = False
        return True

    def chunk(self, data: bytes) -> None:
        if self.conn.is_closing or self.lagging:
            return  # a lagging follower reads ``data`` from the file when it resumes
        if not self.conn.writable:
            self._wait_for_room()
            return
        self._send(data)

    def done(self, state: str) -> None:
        self.final_state = state
        if self.conn.is_closing or not self.catch_up():
            return
        tail = self.decoder.decode(b"", final=True)
        msg: dict[str, Any] = {"taskId": self.task_id, "data": tail, "offset": self.offset, "done": True,
                               "state": state}
        self.conn.notify(p.NOTIFY_TASK_OUTPUT, msg)
        self.conn.close_stream()


class TaskHub:
    """Where task events go: the bus (everyone) and the in-process waiters and log followers."""

    def __init__(self, publish: Callable[[str, str | None, dict[str, Any]], Any]) -> None:
        self.publish = publish
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._followers: dict[str, set[_Follower]] = {}

    # -- fed by the store and the supervisor ----------------------------------------------------------
    def emit(self, event: str, project: str | None, data: dict[str, Any]) -> None:
        """The store's and supervisor's ``emit``: publish ``task.*`` with data = the task (+ ``taskId``)."""
        tid = data.get("id")
        out = dict(data)
        if tid is not None:
            out.setdefault("taskId", tid)
        try:
            self.publish(event, project, out)
        finally:
            if event in _FINAL_EVENTS and tid is not None:
                for fut in self._waiters.pop(tid, []):
                    if not fut.done():
                        fut.set_result(out)
                for f in self._followers.pop(tid, set()):
                    f.done(str(out.get("state")))

    def output(self, task_id: str, data: bytes) -> None:
        """The supervisor's ``on_output``: bytes just appended to ``task_id``'s log."""
        for f in list(self._followers.get(task_id, ())):
            f.chunk(data)

    # -- used by the RPC methods ----------------------------------------------------------------------
    def waiter(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, []).append(fut)
        return fut

    def drop_waiter(self, task_id: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        lst = self._waiters.get(task_id)
        if lst and fut in lst:
            lst.remove(fut)
            if not lst:
                del self._waiters[task_id]

    def follow(self, follower: _Follower) -> None:
        self._followers.setdefault(follower.task_id, set()).add(follower)

    def unfollow(self, follower: _Follower) -> None:
        s = self._followers.get(follower.task_id)
        if s is not None:
            s.discard(follower)
            if not s:
                del self._followers[follower.task_id]

    @property
    def followers(self) -> int:
        return sum(len(s) for s in self._followers.values())


def _invalid(param: str, message: str, **data: Any) -> p.RpcError:
    return p.RpcError(p.INVALID_PARAMS, f"Invalid params: {param}: {message}", {"param": param, **data})


def register(
    rpc: RpcServer,
    store: Callable[[], Store],
    supervisor: Callable[[], Supervisor],
    hub: TaskHub,
    *,
    projects: Callable[[], Iterable[str]],
    agent_names: Callable[[str], list[str]],
    resolve_root: Callable[[str], str],
    log_dir: Path,
    request_stop: Callable[[], None] | None = None,
) -> None:
    """Register the methods.  ``store``/``supervisor`` are getters: both are built when their
    subsystems start, after the methods are registered (and before the socket serves)."""

    def root_of(value: str) -> str:
        try:
            return resolve_root(value)
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, EACCES, ...
            raise _invalid("project", f"cannot resolve {p.quote(value)}: {exc}") from None

    def project_of(value: str | None) -> str:
        served = list(projects())
        if value is None:
            if len(served) == 1:
                return served[0]
            if not served:
                raise _invalid("project", "the service serves no project; add one with `aiwgctl project add`")
            raise _invalid("project", f"required: the service serves {len(served)} projects ({', '.join(served)})",
                           projects=served)
        root = root_of(value)
        if root not in served:
            raise _invalid("project", f"{p.quote(root)} is not a project this service serves"
                           + (f" (serving: {', '.join(served)})" if served else ""), projects=served)
        return root

    def submit(prompt: str, agent: str | None, priority: int, project: str | None, timeout: float | None,
               source: str, origin: dict[str, Any] | None = None, max_budget_usd: float | None = None,
               executor: str | None = None) -> Task:
        root = project_of(project)
        known = agent_names(root)
        try:
            # The AIWG daemon's ``agent`` names a Claude Code subagent: one that names no profile of ours
            # runs with the claude profile, as ``claude --agent NAME``.
            name, subagent = split_agent(agent, known)
        except ValueError as exc:
            raise _invalid("agent", f"{p.quote(agent)} {exc}", known=known) from None
        try:
            return supervisor().submit(root, prompt, agent=name, priority=priority, source=TaskSource(source),
                                       timeout_s=timeout, subagent=subagent, origin=origin,
                                       max_budget_usd=max_budget_usd, executor=executor)
        except ExecutorError as exc:
            raise _invalid("executor", str(exc)) from None
        except KeyError as exc:  # the profile vanished in a reload between the check and the submit
            raise _invalid("agent", str(exc).strip("\"'"), known=known) from None
        except StoreError as exc:
            raise p.RpcError(p.SERVER_BUSY, f"the task store cannot take the task: {exc}") from None

    def get_task(task_id: str, conn: Connection | None = None) -> Task:
        task = store().get(task_id)
        if task is None or not in_scope(task, conn):
            raise _invalid("taskId", f"Task not found: {task_id}")
        return task

    def in_scope(task: Task, conn: Connection | None) -> bool:
        """A connection through a project's own socket sees that project's tasks only."""
        scope = getattr(conn, "project", None)  # an in-process caller (the dashboard) has none
        return scope is None or task.project == scope

    async def task_submit(params: p.TaskSubmitParams, conn: Connection) -> dict[str, Any]:
        priority = 0 if params.priority is None else params.priority
        task = submit(params.prompt, params.agent, priority, params.project, params.timeout, params.source,
                      params.origin, params.max_budget_usd, params.executor)
        try:
            await store().durable()  # answered = on disk (one fsync for every submit of this moment)
        except StoreError as exc:
            raise p.RpcError(p.SERVER_BUSY, f"the task store cannot take the task: {exc}") from None
        if not params.wait:
            return task_result(task)
        fut = hub.waiter(task.id)
        try:
            # It may have finished already (a queued task can be cancelled in the same loop turn).
            now = store().get(task.id)
            if now is not None and now.finished:
                return task_result(now)
            await fut
        finally:
            hub.drop_waiter(task.id, fut)
        final = store().get(task.id)
        return task_result(final if final is not None else task)

    def task_get(params: p.TaskIdParams, conn: Connection) -> dict[str, Any]:
        return task_result(get_task(params.taskId, conn))

    def task_cancel(params: p.TaskIdParams, conn: Connection) -> dict[str, Any]:
        task = store().get(params.taskId)
        if task is None or not in_scope(task, conn):  # the AIWG daemon answers {cancelled: false} here, not an error
            return {"taskId": params.taskId, "cancelled": False, "state": None, "error": "no such task"}
        cancelled = supervisor().cancel(task.id)
        now = store().get(task.id) or task
        out = {"taskId": task.id, "cancelled": cancelled, "state": now.state.value}
        if cancelled and now.state is TaskState.running:
            out["requested"] = True  # asked to stop: ``task.cancelled`` comes when it has exited
        return out

    def task_list(params: p.TaskListParams, _conn: Connection) -> list[dict[str, Any]]:
        """An array, newest first, as the AIWG CLI iterates it; the next page is ``before`` = the last id."""
        project = root_of(params.project) if params.project else None
        out: list[dict[str, Any]] = []
        size = 0
        cursor = params.before
        while len(out) < params.limit and size <= LIST_BYTES:
            # read in small keyset pages: a page of long prompts ends early without reading the rest
            want = min(_LIST_PAGE, params.limit - len(out))
            tasks, cursor = store().list(state=params.state, project=project, source=params.source, limit=want,
                                         cursor=cursor)
            for t in tasks:
                if out and size > LIST_BYTES:
                    break
                # the result twice: as ``result`` and as the AIWG daemon's ``output``
                size += _TASK_OVERHEAD + len(t.prompt) + 2 * len(t.result or "") + len(t.error or "")
                out.append(task_result(t))
            if cursor is None:
                break
        return out

    def task_stats(params: p.TaskStatsParams, _conn: Connection) -> dict[str, Any]:
        project = root_of(params.project) if params.project else None
        out = store().stats(project)
        sup = supervisor()
        out["max_parallel"] = sup.max_parallel
        return out

    def task_logs(params: p.TaskLogsParams, conn: Connection) -> dict[str, Any]:
        task = get_task(params.taskId, conn)
        path = Path(task.log_path) if task.log_path else log_dir / f"{task.id}.log"
        data = b""
        size = 0
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if params.offset < size:  # past the end there is nothing to read (and no seek to fail)
                    f.seek(params.offset)
                    data = f.read(params.limit)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise p.RpcError(p.INTERNAL_ERROR, f"cannot read the log of {task.id}: {exc.strerror}") from None
        offset = min(params.offset, size)
        end = offset + len(data)
        if end < size or not task.finished:
            data = data[:_utf8_boundary(data)]
        nxt = offset + len(data)
        result = {"taskId": task.id, "data": data.decode("utf-8", "replace"), "offset": nxt,
                  "eof": task.finished and nxt >= size, "state": task.state.value, "size": size}
        if params.follow:
            conn.open_stream()
            follower = _Follower(hub, conn, task.id, path, nxt)

            def attach() -> None:
                # After the reply went out, so notifications always follow it.  Everything on the loop
                # thread: no chunk can slip between this backlog read and the registration.
                if conn.is_closing:
                    return
                follower.catch_up()
                now = store().get(task.id)
                if now is None or now.state in FINISHED_STATES:
                    follower.done(now.state.value if now is not None else TaskState.failed.value)
                    return
                hub.follow(follower)
                conn.on_close(lambda: hub.unfollow(follower))

            asyncio.get_running_loop().call_soon(attach)
        return result

    def daemon_stop(params: p.DaemonStopParams, _conn: Connection) -> dict[str, Any]:
        """Stop the service (``aiwgctl stop --agents`` asks for its agents to stop too)."""
        sup = supervisor()
        sup.stop_agents = params.agents
        if request_stop is not None:
            asyncio.get_running_loop().call_soon(request_stop)  # after the reply went out
        return {"stopping": True, "agents": "stop" if params.agents else "keep running",
                "running": len(sup.running)}

    rpc.register("daemon.stop", daemon_stop)
    rpc.register("task.submit", task_submit)
    rpc.register("task.get", task_get)
    rpc.register("task.cancel", task_cancel)
    rpc.register("task.list", task_list)
    rpc.register("task.stats", task_stats)
    rpc.register("task.logs", task_logs)
