"""``aiwgctl approvals``, ``approve ID`` and ``reject ID``: the human side of the rules' approval gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import render
from .core import call

JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="why (recorded with the decision)")]


def _when(iso: str | None) -> str:
    return (iso or "").replace("T", " ").replace("Z", "")[:19]


def approvals(state: Annotated[str, typer.Option("--state", help="pending, approved, rejected, expired or all")]
              = "pending",
              all_: Annotated[bool, typer.Option("--all", help="every state (same as --state all)")] = False,
              project: Annotated[Path | None, typer.Option("--project", help="only this project's")] = None,
              limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
              json: JsonOpt = False) -> None:
    """List approvals (pending by default): id, rule, what it will do, expiry, and who decided."""
    params: dict[str, Any] = {"state": "all" if all_ else state, "limit": limit}
    if project is not None:
        params["project"] = str(project.expanduser().resolve())
    res = call("approval.list", params)
    if json:
        render.emit_json(res)
        return
    rows = []
    for a in res["approvals"]:
        decided = f"{a['decided_by']} via {a['decided_via']}" if a.get("decided_by") else ""
        rows.append((a["id"], a["state"], a["rule_id"], a["message"][:60], _when(a["expires"]), decided))
    render.table(["id", "state", "rule", "message", "expires", "decided"], rows,
                 empty="no pending approvals" if params["state"] == "pending" else "no approvals")


def _decide(method: str, approval_id: str, reason: str | None, json: bool) -> None:
    params: dict[str, Any] = {"approvalId": approval_id, "via": "cli"}
    if reason:
        params["reason"] = reason
    res = call(method, params)
    if json:
        render.emit_json(res)
        return
    a = res["approval"]
    print(f"{a['id']}: {a['state']} (rule {a['rule_id']})")


def approve(approval_id: Annotated[str, typer.Argument(help="approval id (from `aiwgctl approvals`)")],
            reason: ReasonOpt = None, json: JsonOpt = False) -> None:
    """Approve a pending approval: the rule's remaining actions run with the original event."""
    _decide("approval.approve", approval_id, reason, json)


def reject(approval_id: Annotated[str, typer.Argument(help="approval id (from `aiwgctl approvals`)")],
           reason: ReasonOpt = None, json: JsonOpt = False) -> None:
    """Reject a pending approval: the run ends as rejected."""
    _decide("approval.reject", approval_id, reason, json)
