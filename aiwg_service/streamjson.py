"""Claude's stream-json log lines for people: text and tool calls, one short line each (anything else as is).

One renderer for every reader of a task's log: ``aiwgctl task logs`` and the dashboard. A leaf: stdlib only.
"""

from __future__ import annotations

import json
from typing import Any


def excerpt(text: object, n: int = 50) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= n else one[: n - 1] + "…"


def tool_input(inp: Any) -> str:
    if isinstance(inp, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "description", "prompt"):
            if isinstance(inp.get(key), str):
                return excerpt(inp[key], 100)
        return excerpt(json.dumps(inp, ensure_ascii=False), 100)
    return excerpt(str(inp), 100)


def readable(line: str) -> str | None:
    """One log line for people: claude's stream-json as text and tool calls; anything else as is."""
    s = line.strip()
    if not s.startswith("{"):
        return line
    try:
        obj = json.loads(s)
    except ValueError:
        return line
    if not isinstance(obj, dict) or "type" not in obj:
        return line
    kind = obj.get("type")
    if kind == "system":
        if obj.get("subtype") == "init":
            return f"· session {obj.get('session_id', '?')} ({obj.get('model', '?')})"
        return None
    msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
    content = msg.get("content", [])
    if kind == "assistant":
        if isinstance(content, str):
            return content
        out = []
        for b in content if isinstance(content, list) else []:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "text" and b.get("text"):
                out.append(str(b["text"]))
            elif b.get("type") == "tool_use":
                out.append(f"→ {b.get('name', 'tool')}: {tool_input(b.get('input'))}")
        return "\n".join(out) or None
    if kind == "user":
        for b in content if isinstance(content, list) else []:
            if isinstance(b, dict) and b.get("type") == "tool_result":
                c = b.get("content")
                text = c if isinstance(c, str) else " ".join(
                    x.get("text", "") for x in (c or []) if isinstance(x, dict))
                n = len(text.splitlines())
                return f"  ⎿ {excerpt(text, 80)}" + (f" ({n} lines)" if n > 1 else "")
        return None
    if kind == "result":
        cost = obj.get("total_cost_usd")
        bits = [f"{obj.get('num_turns')} turns" if obj.get("num_turns") is not None else "",
                f"${cost:.4f}" if isinstance(cost, int | float) else ""]
        extra = ", ".join(b for b in bits if b)
        mark = "✗ " + str(obj.get("subtype", "error")) if obj.get("is_error") else "✓ done"
        return f"{mark}" + (f" ({extra})" if extra else "")
    return None
