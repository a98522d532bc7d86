"""How a chat turn reads on a terminal: the agent's stream-json as text, dim tool lines, a spinner, and the
loop that follows a turn's task log until it is done (shared by ``aiwgctl chat`` and ``chat -m``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from .. import protocol as p
from ..streamjson import excerpt
from ..streamjson import tool_input as _tool_input
from .chat_rpc import Link

__all__ = ["Spinner", "Style", "TurnPrinter", "excerpt", "follow_turn", "held_reason", "is_tty"]


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def dim(self, s: str) -> str:
        return f"\x1b[2m{s}\x1b[0m" if self.color else s

    def red(self, s: str) -> str:
        return f"\x1b[31m{s}\x1b[0m" if self.color else s

    def bold(self, s: str) -> str:
        return f"\x1b[1m{s}\x1b[0m" if self.color else s


class TurnPrinter:
    """Turns a turn's stream-json log into what a person reads: answer text, dim tool lines, errors."""

    def __init__(self, write: Callable[[str], None], style: Style) -> None:
        self.write = write
        self.s = style
        self.buf = ""
        self.texts: list[str] = []
        self.result: dict[str, Any] | None = None

    def feed(self, data: str) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self._line(line)

    def close(self) -> None:
        if self.buf.strip():
            self._line(self.buf)
        self.buf = ""

    def _line(self, line: str) -> None:
        s = line.strip()
        if not s:
            return
        obj: Any = None
        if s.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(s)
        if not isinstance(obj, dict) or "type" not in obj:
            self.write(self.s.red(line) + "\n")  # the agent's own words on stderr (e.g. an unknown session)
            return
        kind = obj["type"]
        msg = obj.get("message") if isinstance(obj.get("message"), dict) else {}
        content = msg.get("content", [])
        if kind == "assistant":
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            for b in content if isinstance(content, list) else []:
                if not isinstance(b, dict):
                    continue
                if b.get("type") == "text" and b.get("text"):
                    self.texts.append(str(b["text"]))
                    self.write(str(b["text"]).rstrip("\n") + "\n")
                elif b.get("type") == "tool_use":
                    self.write(self.s.dim(f"→ {b.get('name', 'tool')}: {_tool_input(b.get('input'))}") + "\n")
        elif kind == "user":
            for b in content if isinstance(content, list) else []:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    c = b.get("content")
                    text = c if isinstance(c, str) else " ".join(
                        x.get("text", "") for x in (c or []) if isinstance(x, dict))
                    self.write(self.s.dim(f"  ⎿ {excerpt(text, 80)}") + "\n")
        elif kind == "result":
            self.result = obj
            text = obj.get("result")
            if obj.get("is_error"):
                self.write(self.s.red(f"✗ {obj.get('subtype', 'error')}: {text or ''}".rstrip(": ")) + "\n")
            elif isinstance(text, str) and text.strip() and (not self.texts or text.strip() != self.texts[-1].strip()):
                self.write(text.rstrip("\n") + "\n")
            cost = obj.get("total_cost_usd")
            if isinstance(cost, int | float):
                self.write(self.s.dim(f"(${cost:.4f})") + "\n")


class Spinner:
    """A spinner on the terminal while the agent thinks; silent when output is not a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, out: Any, on: bool) -> None:
        self.out = out
        self.on = on
        self.task: asyncio.Task[None] | None = None
        self.shown = False

    def start(self) -> None:
        if self.on and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._spin())

    async def _spin(self) -> None:
        i = 0
        while True:
            self.out.write(f"\r\x1b[K{self.FRAMES[i % len(self.FRAMES)]} thinking…")
            self.out.flush()
            self.shown = True
            i += 1
            await asyncio.sleep(0.1)

    def clear(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False


def held_reason(task: dict[str, Any]) -> str:
    return str(task.get("held_reason") or "waiting for a budget")


async def follow_turn(link: Link, task_id: str, printer: TurnPrinter, spinner: Spinner,
                      on_held: Callable[[str], None] | None = None, *, stop_when_held: bool = False) -> str:
    """Stream the task's log through ``printer`` until the task is done; its final state.

    The service may go away meanwhile (a restart, a ``kill -9``): the turn is re-adopted by the next
    service, and the log is followed again from the last byte printed, so nothing shows twice.  A turn
    held by a budget is reported through ``on_held(reason)`` (once per hold), and followed on, or with
    ``stop_when_held`` left with the state ``held``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    offset = 0
    held_shown: str | None = None

    def show(data: str) -> None:
        spinner.clear()
        printer.feed(data)
        spinner.start()

    def held(reason: str) -> None:
        nonlocal held_shown
        if reason == held_shown:
            return
        held_shown = reason
        if on_held is not None:
            on_held(reason)
        if stop_when_held and not done.done():
            done.set_result("held")

    def on_output(params: dict[str, Any]) -> None:
        nonlocal offset
        if params.get("taskId") != task_id:
            return
        if params.get("data"):
            show(params["data"])
        if isinstance(params.get("offset"), int):
            offset = params["offset"]
        if params.get("done") and not done.done():
            done.set_result(str(params.get("state", "unknown")))

    def on_event(params: dict[str, Any]) -> None:
        ev = params.get("event", params)
        data = ev.get("data") if isinstance(ev, dict) else None
        if isinstance(data, dict) and data.get("id") == task_id and ev.get("type") == "task.held":
            held(held_reason(data))

    offs = [link.on(p.NOTIFY_TASK_OUTPUT, on_output), link.on(p.NOTIFY_EVENT, on_event)]
    spinner.start()
    try:
        while True:
            rpc = await link.current()
            try:
                res = await rpc.call("task.logs", {"taskId": task_id, "offset": offset, "follow": True})
                if res.get("data"):
                    show(res["data"])
                offset = max(offset, int(res.get("offset") or 0))
                if res.get("state") == "held":
                    held(held_reason(await rpc.call("task.get", {"taskId": task_id})))
                    if done.done():
                        return done.result()
            except ConnectionError:
                continue  # the link reconnects; follow again from ``offset``
            closed = loop.create_task(rpc.closed.wait())
            await asyncio.wait([done, closed], return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if done.done():
                return done.result()
    finally:
        for off in offs:
            off()
        spinner.clear()
        printer.close()
