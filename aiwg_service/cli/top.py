"""``aiwgctl top``: a live status screen that redraws when something happens, and sleeps otherwise.

It subscribes to the bus (``events.subscribe``) and redraws on each event (coalesced over 100 ms), or when
the terminal is resized.  No timer runs while nothing happens: idle, it uses no CPU.  When the service goes
away (a restart, a ``kill -9``), the screen keeps its last picture under a status line and reconnects;
once the service answers again it subscribes again and redraws.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from collections import deque
from datetime import UTC, datetime
from typing import Any

from .. import protocol as p
from .chat_rpc import AsyncRpc, Link

__all__ = ["Top", "run"]

COALESCE_S = 0.1


def _short(text: str, n: int) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= n else one[: max(1, n - 1)] + "…"


def _tasks(res: Any) -> list[dict[str, Any]]:
    """``task.list`` answers an array (as the AIWG CLI reads it); older services a ``{tasks}`` object."""
    return list(res) if isinstance(res, list) else list(res.get("tasks", []))


class Top:
    def __init__(self, rpc: Link, out: Any) -> None:
        self.rpc = rpc
        self.out = out
        self.away: str | None = None  # the status line while the service is away
        self.last: dict[str, Any] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=10)
        self._pending: asyncio.TimerHandle | None = None
        self._drawing: asyncio.Task[None] | None = None
        self.draws = 0

    def on_event(self, params: dict[str, Any]) -> None:
        ev = params.get("event", params)
        if isinstance(ev, dict):
            self.events.appendleft(ev)
        self.schedule()

    async def load_history(self) -> None:
        """The bus's recent events, so the screen starts with what already happened (live ones stay first)."""
        res = await self.rpc.call("events.list", {"limit": self.events.maxlen})
        seen = {e.get("id") for e in self.events}
        older = [e for e in reversed(res.get("events", [])) if e.get("id") not in seen]
        self.events = deque([*self.events, *older], maxlen=self.events.maxlen)

    def schedule(self) -> None:
        if self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(COALESCE_S, self._fire)

    def _fire(self) -> None:
        self._pending = None
        if self._drawing is not None and not self._drawing.done():
            self.schedule()  # one redraw at a time; another follows
            return
        self._drawing = asyncio.get_running_loop().create_task(self.draw())

    async def gather(self) -> dict[str, Any]:
        running, queued, rules, recent = await asyncio.gather(
            self.rpc.call("task.list", {"state": "running", "limit": 10}),
            self.rpc.call("task.list", {"state": "queued", "limit": 10}),
            self.rpc.call("automation.status", {}),
            self.rpc.call("task.list", {"limit": 200}),
        )
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        cost = sum(t.get("cost_usd") or 0.0 for t in _tasks(recent) if (t.get("finished_at") or "").startswith(today))
        return {"running": _tasks(running), "queued": _tasks(queued), "rules": rules.get("rules", []),
                "cost_today": cost}

    def render(self, data: dict[str, Any], width: int) -> list[str]:
        now = datetime.now(UTC).strftime("%H:%M:%S")
        lines = [f"aiwg top · {now} UTC · {len(data['running'])} running · {len(data['queued'])} queued · "
                 f"cost today ${data['cost_today']:.4f}", ""]
        lines.append("RUNNING")
        for t in data["running"]:
            lines.append(f"  {t['id']}  {t['source']:<8} {t['agent']:<8} since {(t.get('started_at') or '')[11:19]}  "
                         f"{_short(t['prompt'], 60)}")
        if not data["running"]:
            lines.append("  -")
        lines.append("QUEUED")
        for t in data["queued"]:
            lines.append(f"  {t['id']}  {t['source']:<8} prio {t['priority']:<5} {_short(t['prompt'], 60)}")
        if not data["queued"]:
            lines.append("  -")
        lines.append("RULE RUNS")
        runs = sorted((r for r in data["rules"] if r.get("last_run")), key=lambda r: str(r["last_run"]), reverse=True)
        for r in runs[:5]:
            lines.append(f"  {str(r['last_run'])[11:19]}  {r['id']:<24} {r.get('last_outcome') or '-'}")
        if not runs:
            lines.append("  -")
        lines.append("EVENTS")
        for ev in self.events:
            data_ = ev.get("data") or {}
            what = data_.get("path") or data_.get("id") or data_.get("job_id") or ""
            lines.append(f"  {str(ev.get('time', ''))[11:19]}  {ev.get('type', ''):<18} {_short(str(what), 60)}")
        if not self.events:
            lines.append("  - (waiting for events)")
        return [ln[:width] for ln in lines]

    async def draw(self) -> None:
        if self.away is None or self.last is None:
            self.last = await self.gather()
        size = shutil.get_terminal_size((100, 40))
        lines = self.render(self.last, size.columns)
        if self.away is not None:
            lines = [self.away[: size.columns], *lines]
        lines = lines[: size.lines - 1]
        self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        self.out.flush()
        self.draws += 1


async def run(once: bool, socket: Any) -> int:
    top: list[Top] = []

    def status(state: str, _gone: float) -> None:
        if top:
            if top[0]._drawing is not None and state == "down":
                top[0]._drawing.cancel()  # a redraw waiting for the lost service: draw the status line now
            top[0].away = (f"the service went away at {datetime.now(UTC).strftime('%H:%M:%S')} UTC: reconnecting…"
                           if state == "down" else None)
            top[0].schedule()

    link = await Link.open(socket, status)
    try:
        t = Top(link, sys.stdout)
        top.append(t)
        if once:
            await t.load_history()
            data = await t.gather()
            sys.stdout.write("\n".join(t.render(data, shutil.get_terminal_size((120, 40)).columns)) + "\n")
            return 0
        link.on(p.NOTIFY_EVENT, t.on_event)

        async def subscribe(rpc: AsyncRpc) -> None:
            await rpc.call("events.subscribe", {"type": "*"})

        link.on_up(subscribe)
        await subscribe(await link.current())
        await t.load_history()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGWINCH, t.schedule)
        await t.draw()
        await asyncio.Event().wait()  # until interrupted: the link rides out the service's restarts
        return 0
    finally:
        await link.close()
