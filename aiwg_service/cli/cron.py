"""``aiwgctl cron next|list``: fire times, computed locally or asked of the service."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render
from .core import call, fail

cron_app = typer.Typer(help="Cron schedules: next fire times, and the service's jobs.", no_args_is_help=True)


@cron_app.command("next")
def cron_next(
    expr: Annotated[str, typer.Argument(help='a 5-field expression or a macro, e.g. "0 */6 * * *", @daily')],
    n: Annotated[int, typer.Option("-n", help="how many fire times", min=1, max=10000)] = 5,
    from_: Annotated[str | None, typer.Option("--from", help="start after this ISO-8601 time (default now)")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone (default: the system's)")] = None,
    json: Annotated[bool, typer.Option("--json", help="a JSON list")] = False,
) -> None:
    """Print the next N fire times of EXPR, one ISO-8601 time a line. No service needed."""
    from datetime import UTC, datetime

    from ..events.cron import CronSchedule, format_time, parse_time

    try:
        sched = CronSchedule(expr, tz)
    except ValueError as exc:
        fail(str(exc))
    try:
        start = parse_time(from_) if from_ else datetime.now(UTC)
    except ValueError as exc:
        fail(f"--from: {exc}")
    times = [format_time(t) for t in sched.next_n(start, n)]
    if json:
        render.emit_json(times)
    else:
        print("\n".join(times))


@cron_app.command("list")
def cron_list(json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Show the service's cron jobs with their next fire times."""
    res = call("cron.list")
    if json:
        render.emit_json(res)
        return
    render.table(["project", "job", "cron", "tz", "action", "next fire", "last fire"],
                 [(j["project"], j["id"], j["cron"], j["tz"], j["action"], j["next_fire"], j["last_fire"] or "-")
                  for j in res["jobs"]], empty="no cron jobs")
