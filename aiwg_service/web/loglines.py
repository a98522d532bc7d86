"""A task's log as the dashboard shows it: complete lines, readable (``streamjson``), each with the byte offset
after it, so a page that has some of them already (rendered with the page, or sent twice) adds each line once.
"""

from __future__ import annotations

from ..streamjson import readable


class Lines:
    """Cuts one task's streamed log text into rendered lines; ``pos`` is the offset after the last complete one."""

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.buf = ""

    def feed(self, data: str, end: int) -> list[tuple[int, str]]:
        """``data`` ends at byte ``end`` of the log. A chunk that does not follow on (a gap, a resend) starts
        afresh at its own beginning."""
        start = end - len(data.encode())
        if start != self.pos + len(self.buf.encode()):
            self.pos, self.buf = start, ""
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        out = []
        for ln in lines:
            self.pos += len(ln.encode()) + 1
            shown = readable(ln)
            if shown is not None:
                out.append((self.pos, shown))
        return out

    def flush(self, end: int) -> list[tuple[int, str]]:
        """The last line, which no newline ended (the task is over)."""
        line, self.buf = self.buf, ""
        if not line:
            return []
        self.pos = end
        shown = readable(line)
        return [(end, shown)] if shown is not None else []
