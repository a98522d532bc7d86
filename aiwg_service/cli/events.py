"""``aiwgctl events``: the bus's recent history, or follow it live."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from .. import protocol as p
from . import render
from .core import call, fail, no_service, resolve_socket

events_app = typer.Typer(help="Events on the bus: history, live follow, dead letters.")


def _line(ev: dict[str, Any]) -> str:
    data = ev.get("data", {})
    detail = data.get("path") or data.get("job_id") or data.get("taskId") or data.get("id") or ""
    if ev["type"] == "file.batch":
        detail = f"{data.get('count', 0)} files"
        if data.get("parts", 1) > 1:
            detail += f" (part {data.get('part')}/{data['parts']})"
    elif ev["type"] == "file.move" and data.get("from_path"):
        detail = f"{data['from_path']} -> {detail}"
    project = ev.get("project") or "-"
    return render.safe(f"{ev['time']}  {ev['type']:<16} {project}  {detail}".rstrip())


@events_app.callback(invoke_without_command=True)
def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep printing events as they come")] = False,
    type: Annotated[str, typer.Option("--type", "-t", help="event type or pattern: file.*, task.failed, *")] = "*",
    project: Annotated[str | None, typer.Option("--project", help="only this project root")] = None,
    limit: Annotated[int, typer.Option("-n", help="how many past events to show")] = 50,
    dead: Annotated[bool, typer.Option("--dead", help="list the dead-letter queue instead")] = False,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    since: Annotated[int | None, typer.Option(
        "--since", "--after-cursor", min=0,
        help="with -f: start after this event sequence number (the `seq` of the last event seen)")] = None,
) -> None:
    """Show recent events from the bus; -f follows new ones as they come."""
    if ctx.invoked_subcommand is not None:
        return
    if dead:
        res = call("events.dlq")
        if json:
            render.emit_json(res)
            return
        render.table(["id", "subscriber", "event", "attempts", "error"],
                     [(d["id"], d["subscriber"], d["event"]["type"], d["attempts"], d["error"])
                      for d in res["dead_letters"]], empty="no dead letters")
        return
    if not follow:
        res = call("events.list", {"type": type, "project": project, "limit": max(1, min(limit, 1000))})
        for ev in res["events"]:
            print(render.dumps(ev) if json else _line(ev))
        return
    try:
        _follow(type, project, since, json)
    except KeyboardInterrupt:
        sys.exit(0)


def _follow(type: str, project: str | None, since: int | None, as_json: bool) -> None:
    """Print events as they come, resuming by sequence number: after a gap (told on stderr, with how many
    events were lost) and across a restart of the service, which it waits for, retrying with backoff."""
    from ..client import Client, NotRunning

    last = since
    backoff = 0.1
    connected = False
    while True:
        try:
            with Client(resolve_socket(), None) as c:
                params: dict[str, Any] = {"type": type, "project": project, "since": last}
                for msg in c.stream("events.subscribe", params):
                    method = msg.get("method")
                    if method == p.NOTIFY_EVENT:
                        ev = msg["params"]
                        last = ev.get("seq", last)
                        print(render.dumps(ev) if as_json else _line(ev), flush=True)
                    elif method == p.NOTIFY_GAP:
                        gap = msg["params"]
                        print(f"aiwgctl: {gap['lost']} events were lost (sequence {gap['from']}-{gap['to']} fell out "
                              "of the service's history before they could be shown)", file=sys.stderr, flush=True)
                        last = gap["to"]
                    elif "result" in msg:
                        if last is None:
                            last = msg["result"]["seq"]
                        if connected:
                            print(f"aiwgctl: reconnected; resuming after event {last}", file=sys.stderr, flush=True)
                        connected = True
                        backoff = 0.1
        except NotRunning as exc:
            if not connected:
                fail(no_service(exc))
        except p.RpcError as exc:
            fail(exc.message)
        if backoff == 0.1:
            print("aiwgctl: the service went away; waiting for it to come back", file=sys.stderr, flush=True)
        time.sleep(backoff)
        backoff = min(backoff * 2, 5.0)


@events_app.command("replay")
def replay(dead_letter_id: Annotated[str, typer.Argument(help="a dead letter's id (see `events --dead`)")]) -> None:
    """Deliver a dead letter again to the subscriber that failed on it."""
    res = call("events.replay", {"id": dead_letter_id})
    print(f"replayed {res['event']['type']} {res['event']['id']} to {res['subscriber']}")
