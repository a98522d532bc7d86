"""``aiwgctl webhook list`` and ``webhook test ID``: the hooks the service serves, and a signed test delivery."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from . import render
from .core import call, fail

webhook_app = typer.Typer(help="Incoming webhooks: list the hooks, send a signed test delivery.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


@webhook_app.command("list")
def webhook_list(json: JsonOpt = False) -> None:
    """Each hook's URL, kind, project, last delivery and its result."""
    res = call("webhook.list")
    if json:
        render.emit_json(res)
        return
    where = res.get("listening") or f"not listening ({res.get('error') or 'no hooks configured'})"
    print(f"listener: {where}{' (socket from systemd)' if res.get('from_systemd') else ''}")
    rows = []
    for h in res["hooks"]:
        last = h.get("last") or {}
        when = (last.get("time") or "never").replace("T", " ").replace("Z", "")[:19]
        result = f"{last['status']} {last['result']}" if last else ""
        rows.append((h["id"], h["kind"], h.get("url") or "-", when, result, h["accepted"], h["refused"]))
    render.table(["id", "kind", "url", "last delivery", "result", "accepted", "refused"], rows,
                 empty='no hooks (add them under "webhook": {"hooks": [...]} in .aiwg/daemon.json)')
    for c in res.get("conflicts", []):
        print(f"warning: {c}")


@webhook_app.command("test")
def webhook_test(hook_id: Annotated[str, typer.Argument(help="hook id")],
                 event: Annotated[str | None, typer.Option("--event", help="event name (GitHub: push, ...)")] = None,
                 payload: Annotated[Path | None, typer.Option("--payload", help="a JSON file to send")] = None,
                 json: JsonOpt = False) -> None:
    """Sign a delivery with the hook's secret and send it to the running service, as the sender would."""
    params: dict[str, Any] = {"hookId": hook_id}
    if event:
        params["event"] = event
    if payload is not None:
        try:
            params["payload"] = jsonlib.loads(payload.read_text())
        except OSError as exc:
            fail(f"{payload}: {exc.strerror}")
        except ValueError as exc:
            fail(f"{payload}: not valid JSON: {exc}")
    res = call("webhook.test", params)
    if json:
        render.emit_json(res)
        return
    print(f"POST {res['url']} -> {res['status']} {jsonlib.dumps(res['response'])}")
    if not 200 <= res["status"] < 300:
        raise typer.Exit(1)
