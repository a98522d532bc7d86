"""Plain-text output for people (tables, key/value blocks) and JSON for scripts. No rich: start-up speed."""

from __future__ import annotations

import sys

from .. import jsonlite

# typing and collections.abc cost milliseconds at import: this module is on aiwgctl's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def dumps(data: Any) -> str:
    return jsonlite.dumps(data, default=str)


def emit_json(data: Any) -> None:
    sys.stdout.write(jsonlite.dumps(data, indent=2, default=str) + "\n")


def safe(text: Any) -> str:
    """Text for a terminal: control characters as visible escapes (``\n``, ``\x1b``), so a file name or a
    message from anyone cannot forge a line or redraw the screen (the log does the same)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else
                   _ESC.get(c, f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in s)


_ESC = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def text(value: Any) -> str:
    """Multi-line text (an agent's answer) for a terminal: its lines kept, every other control character
    (an escape sequence, a carriage return that would overwrite the line) escaped."""
    return "\n".join(safe(line) for line in str(value).split("\n"))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> None:
    if not rows:
        print(safe(empty))
        return
    cells = [[("" if c is None else safe(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def kv(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        print(f"{k + ':':<{width + 1}} {safe(v)}")


def duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


def error(msg: str) -> None:
    # line by line: our own messages span lines (config errors); every other control character is escaped
    sys.stderr.write("aiwgctl: " + text(msg) + "\n")
