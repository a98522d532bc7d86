"""What an event says in a chat: a title, a readable text and a severity, never a JSON blob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from ..protocol import Event
from .model import Button, OutMessage, Severity


def severity_of(event: Event) -> Severity:
    sev = event.data.get("severity")
    if sev in ("info", "warning", "critical"):
        return sev
    t = event.type
    if "critical" in t:
        return "critical"
    if t.endswith((".failed", ".timeout", ".degraded", ".loop_detected", ".error", ".interrupted")):
        return "warning"
    return "info"


def event_message(event: Event, severity: Severity | None = None) -> OutMessage:
    """A readable message for an event the user subscribed to."""
    d = event.data
    sev = severity or severity_of(event)
    where = f" · {Path(event.project).name}" if event.project else ""
    if event.type == "notify.request":
        return OutMessage(str(d.get("message", "")), severity=sev)
    if event.type.startswith("task."):
        word = event.type.split(".", 1)[1]
        text = str(d.get("prompt", ""))[:300]
        if d.get("error"):
            text += f"\nerror: {d['error']}"
        return OutMessage(text, title=f"Task {d.get('id', '?')} {word}{where}", severity=sev)
    if event.type == "approval.requested":
        aid = str(d.get("approval_id") or d.get("id") or "?")
        summary = d.get("summary") or d.get("title") or d.get("prompt") or d.get("message") or ""
        text = f"{summary}\nReply /approve {aid} or /reject {aid} [reason]".strip()
        return OutMessage(text, title=f"Approval needed: {aid}{where}", severity=sev,
                          buttons=[Button("Approve", "approve", aid), Button("Reject", "reject", aid)])
    if event.type == "automation.loop_detected":
        return OutMessage(str(d.get("message") or d.get("reason") or ""),
                          title=f"Rule {d.get('rule_id', '?')} paused: loop detected{where}", severity=sev)
    if event.type.startswith("budget.") and d.get("budget"):
        spent, limit = d.get("spent_usd"), d.get("limit_usd")
        text = (f"{d['budget']} budget for {d.get('key') or d.get('task') or '?'}: "
                + (f"${spent:.4f} of ${limit:.4f}" if isinstance(spent, int | float) and isinstance(limit, int | float)
                   else "")
                + (f" ({d['period']})" if d.get("period") else ""))
        return OutMessage(text, title=f"Budget {event.type.split('.', 1)[1]}{where}", severity=sev)
    text = str(d.get("message") or "") or readable(d)
    return OutMessage(text, title=f"{event.type}{where}", severity=sev)


def readable(data: dict[str, Any], limit: int = 1000) -> str:
    """An event's data as "key: value" lines (nested values shortened), never a JSON blob."""
    lines = []
    for k, v in data.items():
        if isinstance(v, dict | list):
            v = msgspec.json.encode(v).decode()
            v = v if len(v) <= 120 else v[:119] + "…"
        lines.append(f"{k}: {v}")
    return "\n".join(lines)[:limit]
