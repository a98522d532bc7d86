"""``aiwgctl task``: submit agent tasks, follow their output, list, inspect, cancel.

``task submit --wait`` exits with the task's outcome, so scripts can branch on it:
0 completed, 1 failed (or any error talking to the service), 124 timeout, 130 cancelled
(the ``timeout(1)`` and SIGINT conventions).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import protocol as p
from ..streamjson import excerpt, readable
from . import render
from .core import call, fail, no_service, project_param, resolve_socket

task_app = typer.Typer(help="Agent tasks: submit, follow, list, inspect, cancel.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
EXIT_CODES = {"completed": 0, "failed": 1, "timeout": 124, "cancelled": 130}
STATES = ["queued", "held", "running", "completed", "failed", "timeout", "cancelled", "interrupted"]


# -- helpers ------------------------------------------------------------------------------------------------


def _project(path: Path | None) -> str | None:
    return project_param(path)


def _since(iso: str | None, until: str | None = None) -> float | None:
    if not iso:
        return None
    from ..tasks.model import parse_time

    end = parse_time(until) if until else time.time()
    return max(0.0, end - parse_time(iso))


def _short(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else render.duration(seconds)


def _cost(t: dict[str, Any]) -> str:
    c = t.get("cost_usd")
    if c is None:
        return "unknown" if t.get("cost_status") in ("missing", "malformed") else "-"
    return f"${c:.4f}" + ("~" if t.get("cost_status") == "estimated" else "")


def _took(t: dict[str, Any]) -> str:
    if t.get("started_at"):
        return _short(_since(t["started_at"], t.get("finished_at")))
    return "-"


class Spinner:
    """A spinner on stderr while we wait, only on a terminal; output lines clear it first."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, label: str) -> None:
        self.label = label
        self.on = sys.stderr.isatty()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self.on:
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_ev.set()
        if self.thread is not None:
            self.thread.join(1)
        self.clear()

    def _spin(self) -> None:
        i = 0
        while not self.stop_ev.wait(0.1):
            with self.lock:
                el = render.duration(time.monotonic() - self.t0)
                sys.stderr.write(f"\r\033[K{self.FRAMES[i % len(self.FRAMES)]} {self.label} ({el})")
                sys.stderr.flush()
            i += 1

    def clear(self) -> None:
        if self.on:
            with self.lock:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()

    def print(self, text: str) -> None:
        with self.lock:
            if self.on:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            sys.stdout.write(text)
            sys.stdout.flush()


class LineRenderer:
    """Feeds streamed text, prints complete lines (readable or raw)."""

    def __init__(self, out: Spinner, raw: bool) -> None:
        self.out = out
        self.raw = raw
        self.buf = ""

    def feed(self, text: str) -> None:
        if self.raw:
            self.out.print(render.text(text))
            return
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        shown = [r for r in (readable(ln) for ln in lines) if r is not None]
        if shown:
            self.out.print(render.text("\n".join(shown)) + "\n")

    def close(self) -> None:
        if self.buf and not self.raw:
            r = readable(self.buf)
            if r is not None:
                self.out.print(render.text(r) + "\n")
        self.buf = ""


#: How long ``logs -f`` keeps trying to reconnect while the service restarts (agents keep running).
RECONNECT_S = 120.0


def follow_logs(task_id: str, offset: int, raw: bool, label: str, quiet: bool = False) -> str:
    """Stream ``task.logs {follow}`` until the task is done; returns its final state.

    If the service restarts meanwhile (the agent keeps running), reconnect and go on from the last
    byte received, so every line is shown exactly once."""
    import time

    from ..client import Client, Impostor, NotRunning

    state = "unknown"
    done = False
    with Spinner(label) as sp:
        r = LineRenderer(sp, raw)
        gave_up_at: float | None = None
        while not done:
            try:
                with Client(resolve_socket(), None) as c:
                    for msg in c.stream("task.logs", {"taskId": task_id, "offset": offset, "follow": True}):
                        gave_up_at = None
                        if "result" in msg:
                            res = msg["result"]
                            state = res.get("state", state)
                            offset = res.get("offset", offset)
                            if not quiet:
                                r.feed(res.get("data", ""))
                            if res.get("eof"):
                                done = True
                                break
                        elif msg.get("method") == p.NOTIFY_TASK_OUTPUT:
                            prm = msg.get("params", {})
                            offset = prm.get("offset", offset)
                            if not quiet and prm.get("data"):
                                r.feed(prm["data"])
                            if prm.get("done"):
                                state = prm.get("state", state)
                                done = True
                                break
            except NotRunning as exc:
                now = time.monotonic()
                if isinstance(exc, Impostor) or (state == "unknown" and gave_up_at is None and offset == 0):
                    fail(no_service(exc))
                gave_up_at = gave_up_at or now + RECONNECT_S
                if now > gave_up_at:
                    fail(f"{exc}; the task may still be running: `aiwgctl task get {task_id}`")
                time.sleep(0.2)
                continue
            except p.RpcError as exc:
                fail(exc.message)
            if not done:  # the service went away mid-stream (a restart): resume from ``offset``
                gave_up_at = gave_up_at or time.monotonic() + RECONNECT_S
                time.sleep(0.1)
        r.close()
    return state


def _print_task(t: dict[str, Any]) -> None:
    pairs: list[tuple[str, Any]] = [
        ("task", t["id"]), ("state", t["state"] + (f" ({t['error']})" if t.get("error") else "")),
        ("project", t["project"]), ("agent", _agent(t)), ("priority", t["priority"]), ("source", t["source"]),
        ("created", t["created_at"]), ("started", t.get("started_at") or "-"),
        ("finished", t.get("finished_at") or "-"), ("took", _took(t)), ("attempts", t.get("attempts", 0)),
    ]
    if t.get("exit_code") is not None or t.get("signal") is not None:
        pairs.append(("exit", t["exit_code"] if t.get("exit_code") is not None else f"signal {t['signal']}"))
    if t.get("cost_usd") is not None or t.get("cost_status") in ("missing", "malformed"):
        pairs.append(("cost", _cost(t) + (f" ({t['cost_status']} in the stream)"
                                          if t.get("cost_status") in ("missing", "malformed") else "")))
    if t.get("max_budget_usd") is not None:
        pairs.append(("budget", f"${t['max_budget_usd']:g}"))
    if t.get("held_reason"):  # a spent budget (held), or a full or down executor (still queued)
        pairs.append(("waiting" if t.get("state") == "queued" else "held", t["held_reason"]))
    if t.get("adopted"):
        pairs.append(("adopted", f"re-adopted {t['adopted']}x by a restarted service"))
    if t.get("executor"):
        h = t.get("handle") or {}
        where = h.get("unit") or (f"job {h['job']}" if h.get("job") else None) or h.get("host") or h.get("kind")
        pairs.append(("executor", t["executor"] + (f" ({where})" if where else "")))
    box = (t.get("handle") or {}).get("sandbox")
    if box:  # what the run was confined with (stored with its handle at launch)
        what = box.get("mechanism", "?")
        if box.get("enabled"):
            net = box.get("network", "full")
            if net == "allow":
                net += " " + ",".join(box.get("allow_hosts") or []) or " nothing"
            what += f"; writes {', '.join(box.get('write') or [])}; network {net}; socket {box.get('socket', 'none')}"
        pairs.append(("sandbox", what))
    if t.get("origin"):
        pairs.append(("origin", ", ".join(f"{k}={v}" for k, v in t["origin"].items())))
    if t.get("input_tokens") is not None:
        pairs.append(("tokens", f"{t['input_tokens']} in, {t['output_tokens']} out, "
                                f"{t.get('cache_read_tokens') or 0} cache read"))
    if t.get("session_id"):
        pairs.append(("session", t["session_id"]))
    pairs.append(("log", t.get("log_path") or "-"))
    pairs.append(("prompt", excerpt(t["prompt"], 200)))
    render.kv(pairs)
    if t.get("result"):
        print()
        print(render.text(t["result"]))


# -- commands -----------------------------------------------------------------------------------------------


@task_app.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="what the agent should do")],
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="agent profile (default: claude)")] = None,
    priority: Annotated[int, typer.Option("--priority", "-p", help="higher runs first, -1000..1000")] = 0,
    project: Annotated[Path | None, typer.Option("--project", help="project root (needed when the service "
                                                 "serves several)")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="seconds before the task is killed")] = None,
    executor: Annotated[str | None, typer.Option("--executor", "-e", help="where it runs (an executor of the "
                                                 "service's config; default: the profile's)")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="stream the agent's output and exit with its "
                                       "outcome: 0 completed, 1 failed, 124 timeout, 130 cancelled")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="with --wait: print the output exactly as logged")] = False,
    json: JsonOpt = False,
) -> None:
    """Queue a task for an agent; prints its id (or, with --wait, its output as it runs)."""
    params = {"prompt": prompt, "agent": agent, "priority": priority, "project": _project(project),
              "timeout": timeout}
    if executor is not None:
        params["executor"] = executor
    res = call("task.submit", params)
    tid = res["taskId"]
    if not wait:
        if json:
            render.emit_json(res)
        else:
            print(tid)
        return
    if not json and sys.stderr.isatty():
        render.error(f"{tid} queued")
    state = follow_logs(tid, 0, raw, f"{tid} {agent or 'claude'}", quiet=json)
    final = call("task.get", {"taskId": tid})
    state = final.get("state", state)
    if json:
        render.emit_json(final)
    elif state != "completed":
        render.error(f"{tid} {state}" + (f": {final['error']}" if final.get("error") else ""))
    raise typer.Exit(EXIT_CODES.get(state, 1))


def _state(t: dict[str, Any]) -> str:
    """The state, marked when a restarted service re-adopted the run (it kept running meanwhile)."""
    st = t["state"]
    if t.get("adopted") and st == "running":
        return "running (adopted)"
    return st


@task_app.command("list")
def list_(
    state: Annotated[str | None, typer.Option("--state", "-s", help=f"only this state: {', '.join(STATES)}")] = None,
    project: Annotated[Path | None, typer.Option("--project", help="only this project root")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="how many, newest first", min=1, max=1000)] = 20,
    before: Annotated[str | None, typer.Option("--before", help="page on: tasks older than this id")] = None,
    json: JsonOpt = False,
) -> None:
    """List tasks, newest first."""
    if state is not None and state not in STATES:
        fail(f"--state: {state!r} is not one of {', '.join(STATES)}")
    res = call("task.list", {"state": state, "project": _project(project), "limit": limit, "before": before})
    if json:
        render.emit_json(res)
        return
    rows = [(t["id"], _state(t), _agent(t), t["priority"], _short(_since(t["created_at"])), _took(t), _cost(t),
             excerpt(t["prompt"])) for t in res]
    render.table(["id", "state", "agent", "pri", "age", "took", "cost", "prompt"], rows, empty="no tasks")
    if len(res) == limit:  # keyset paging: the next page is what is older than the last id shown
        print(f"(more: aiwgctl task list --before {res[-1]['id']})")


def _agent(t: dict[str, Any]) -> str:
    """The profile, with the Claude Code subagent it runs (``claude --agent NAME``) if any."""
    return f"{t['agent']}:{t['subagent']}" if t.get("subagent") else t["agent"]


@task_app.command("get")
def get(task_id: Annotated[str, typer.Argument(help="task id")], json: JsonOpt = False) -> None:
    """Show one task: state, timings, cost, result."""
    t = call("task.get", {"taskId": task_id})
    if json:
        render.emit_json(t)
    else:
        _print_task(t)


@task_app.command("cancel")
def cancel(task_id: Annotated[str, typer.Argument(help="task id")], json: JsonOpt = False) -> None:
    """Cancel a queued task, or stop a running one (its whole process group)."""
    res = call("task.cancel", {"taskId": task_id})
    if json:
        render.emit_json(res)
        if res.get("state") is None:
            raise typer.Exit(1)
        return
    if res.get("state") is None:
        fail(f"no task {task_id}")
    if res["cancelled"]:
        print(f"{task_id}: " + ("cancelling (stopping its processes)" if res["state"] == "running" else "cancelled"))
    else:
        fail(f"{task_id} is already {res['state']}; nothing to cancel")


@task_app.command("stats")
def stats(project: Annotated[Path | None, typer.Option("--project", help="only this project root")] = None,
          json: JsonOpt = False) -> None:
    """Counts per state, run times, total cost."""
    s = call("task.stats", {"project": _project(project)})
    if json:
        render.emit_json(s)
        return
    render.kv([
        ("total", s["total"]),
        ("queued / running", f"{s['queued']} / {s['running']} (max {s.get('max_parallel', '?')} at once)"),
        ("completed", s["completed"]), ("failed", s["failed"]), ("timeout", s.get("timeout", 0)),
        ("cancelled", s["cancelled"]), ("interrupted", s.get("interrupted", 0)),
        ("run time", f"mean {_short(s.get('mean_run_s'))}, p95 {_short(s.get('p95_run_s'))} "
                     f"over {s.get('finished_runs', 0)} runs"),
        ("cost", f"${s.get('cost_usd', 0):.4f}"),
    ])


@task_app.command("logs")
def logs(
    task_id: Annotated[str, typer.Argument(help="task id")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing output until the task ends")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="the log exactly as written (claude's stream-json)")] = False,
    json: JsonOpt = False,
) -> None:
    """Print a task's output (readable; --raw for the log as is)."""
    if follow and not json:
        state = follow_logs(task_id, 0, raw, f"{task_id} running")
        raise typer.Exit(0 if state in EXIT_CODES or state == "unknown" else 1)
    offset, chunks = 0, []
    while True:
        res = call("task.logs", {"taskId": task_id, "offset": offset, "limit": 256 * 1024})
        chunks.append(res["data"])
        if res["offset"] == offset or res["offset"] >= res.get("size", 0):
            break
        offset = res["offset"]
    text = "".join(chunks)
    if json:
        render.emit_json({"taskId": task_id, "data": text, "offset": res["offset"], "eof": res["eof"],
                          "state": res["state"]})
        return
    sp = Spinner("")
    sp.on = False
    r = LineRenderer(sp, raw)
    r.feed(text)
    r.close()
