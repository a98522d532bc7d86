"""``aiwgctl notify`` and ``aiwgctl messaging status``: send through the bridges, see how they are."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .core import call

messaging_app = typer.Typer(help="Messaging bridges: Slack, Discord, Telegram, Apprise.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def notify(
    message: Annotated[str, typer.Argument(help="the text to send")],
    channel: Annotated[str | None, typer.Option("--channel", "-c", help="a bridge (telegram) or bridge:target "
                                                "(slack:C0123); default: every bridge")] = None,
    severity: Annotated[str, typer.Option("--severity", "-s", help="info, warning or critical")] = "info",
    json: JsonOpt = False,
) -> None:
    """Send a message through the messaging bridges (retried, then dead-lettered if it cannot go)."""
    params = {"message": message, "severity": severity}
    if channel:
        params["channel"] = channel
    res = call("messaging.notify", params)
    if json:
        render.emit_json(res)
    elif res["bridges"]:
        print(f"queued for {', '.join(res['bridges'])} (event {res['event_id']})")
    else:
        print("no bridge is enabled for this message; see `aiwgctl messaging status`")
        raise typer.Exit(1)


@messaging_app.command("status")
def messaging_status(json: JsonOpt = False) -> None:
    """Each bridge: enabled, connected, last error, messages in and out."""
    res = call("messaging.status")
    if json:
        render.emit_json(res)
        return
    rows = [(name, b["state"], "in+out" if b["inbound"] else ("out" if b["enabled"] else "-"),
             b["messages_in"], b["messages_out"], b["detail"] or "", b["last_error"] or "")
            for name, b in res["bridges"].items()]
    render.table(["bridge", "state", "direction", "in", "out", "detail", "last error"], rows, empty="no bridges")
    c = res["commands"]
    print(f"commands: {c['run']} run, {c['refused']} refused, {c['rate_limited']} rate-limited; "
          f"{res['users']} user(s) allowed")
