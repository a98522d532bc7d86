"""``aiwgctl budget`` (what each budget has spent in its period, against its limit, and what waits
for it) and ``aiwgctl trace ID`` (the chain from a source event to the costs it caused)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import render
from .core import call

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def budget(project: Annotated[Path | None, typer.Option("--project", help="only this project root")] = None,
           json: JsonOpt = False) -> None:
    """Show each budget: spent, limit, period, and the tasks held for it."""
    res = call("budget.status", {"project": str(project.resolve()) if project else None})
    if json:
        render.emit_json(res)
        return
    rows = [(b["budget"], b["key"], b["period"], f"${b['spent_usd']:.4f}", f"${b['limit_usd']:g}",
             f"{100 * b['spent_usd'] / b['limit_usd']:.0f}%" if b["limit_usd"] else "-",
             ", ".join(b["held"]) or "-") for b in res["budgets"]]
    render.table(["budget", "for", "period", "spent", "limit", "used", "held"], rows,
                 empty="no budgets configured (see docs/budgets.md)")
    for h in res.get("held", []):
        print(f"held {h['taskId']}: {h['reason']}")


def _approval(ap: Any) -> str:
    if isinstance(ap, dict):
        return f" approval {ap.get('id', '?')} {ap.get('state', '')}".rstrip()
    return f" approval {ap}"


def _cond(c: dict[str, Any]) -> str:
    """A condition's result as the trace stores it (``kind`` and ``ok``, see rules/conditions.py); one not
    evaluated (the run stopped at an earlier one) has no ``ok`` and shows as ``-``."""
    ok = c.get("ok")
    return f"{c.get('kind', 'condition')}={'-' if ok is None else 'ok' if ok else 'no'}"


def _line(node: dict[str, Any]) -> str:
    kind, d = node["kind"], node
    if kind == "event":
        return f"event {d['id']} {d.get('type', '')} {d.get('time', '')}".rstrip()
    if kind == "rule_run":
        conds = ", ".join(_cond(c) for c in d.get("conditions", []))
        return (f"rule {d.get('rule')} run {d['id']}: {d.get('outcome', '?')}" + (f" [{conds}]" if conds else "")
                + (_approval(d["approval"]) if d.get("approval") else ""))
    if kind == "task":
        cost = d.get("cost_usd")
        return (f"task {d['id']} {d.get('agent', '')} {d.get('state', '')}"
                + (f" ${cost:.4f}" if cost is not None else " cost unknown" if d.get("cost_status") else "")
                + (f" session {d['session_id']}" if d.get("session_id") else "")
                + (f" ({d['error']})" if d.get("error") else ""))
    if kind == "conversation":
        return f"conversation {d['id']}" + (f" turn {d['turn']}" if d.get("turn") is not None else "")
    return f"{kind} {d.get('id', '')}"


def _tree(node: dict[str, Any], prefix: str = "", last: bool = True, root: bool = True) -> None:
    print(("" if root else prefix + ("└─ " if last else "├─ ")) + _line(node))
    kids = node.get("children", [])
    for i, child in enumerate(kids):
        _tree(child, "" if root else prefix + ("   " if last else "│  "), i == len(kids) - 1, False)


def trace(ident: Annotated[str, typer.Argument(help="an event, rule run, task or conversation id")],
          json: JsonOpt = False) -> None:
    """Show why something ran: the chain from the source event through rule runs to tasks, their
    costs and outcomes, and what those caused in turn."""
    res = call("trace.get", {"id": ident})
    if json:
        render.emit_json(res)
        return
    _tree(res["root"])
    if res.get("total_cost_usd") is not None:
        print(f"total cost ${res['total_cost_usd']:.4f}")

