"""The ``events.*`` RPC methods: history by sequence number, dead letters, replay, and live subscriptions.

A subscription is a cursor into the bus's history (``history.py``), pumped while its connection has room:
nothing is queued per subscriber and nothing is dropped silently. A client that does not read falls behind
in the history instead; if what it has not read is evicted meanwhile, it is sent one ``events.gap`` notice
(``from``, ``to``, ``lost``) and goes on from the oldest event still retained.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from msgspec import Raw

from .. import protocol as p
from ..rpc import Connection, RpcServer
from .bus import EventBus, compile_pattern
from .history import Kept

#: Bytes one follower sends in one loop turn before letting the others (and other connections) run.
PUMP_BYTES = 256 * 1024
#: A follower whose client has not read for this long stops pinning the history (it is "slow" then).
PROMPT_GRACE = 2.0


class RpcFollower:
    """One ``events.subscribe`` stream on one connection."""

    def __init__(self, bus: EventBus, conn: Connection, pattern: str, project: str | None, cursor: int) -> None:
        self.bus = bus
        self.conn = conn
        self.match = compile_pattern(pattern)
        self.project = project
        self.cursor = cursor  # the last sequence number sent (or passed over)
        self.lost = 0
        self.sent = 0
        self._scheduled = False
        self._blocked_since: float | None = None  # waiting for the client to read

    @property
    def prompt(self) -> bool:
        return self._blocked_since is None or time.monotonic() - self._blocked_since < PROMPT_GRACE

    def wake(self) -> None:
        """More events: send them now if the connection has room (no loop turn between a change and its
        follower), else when it has."""
        if self._scheduled or self._blocked_since is not None:
            return
        self._pump()

    def _later(self) -> None:
        """Go on in the next loop turn (this follower has had its share of this one)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def close(self) -> None:
        self.bus.unfollow(self)
        self.conn.close_stream()

    def _unblock(self) -> None:
        self._blocked_since = None
        self.wake()

    def _pump(self) -> None:
        self._scheduled = False
        conn = self.conn
        if conn.is_closing:
            return
        kept = self.bus.kept
        first = kept.first_seq
        if self.cursor < first - 1:
            lost = first - 1 - self.cursor
            self.lost += lost
            conn.server.notifications_dropped += lost
            conn.notify(p.NOTIFY_GAP, {"from": self.cursor + 1, "to": first - 1, "lost": lost})
            self.cursor = first - 1
        budget = PUMP_BYTES
        project, match = self.project, self.match
        for k in kept.after(self.cursor):
            self.cursor = k.seq
            if (project is not None and k.project != project) or not match(k.type):
                continue
            conn.send(k.frame)
            self.sent += 1
            budget -= len(k.frame)
            if not conn.writable:
                self._blocked_since = time.monotonic()
                conn.when_writable(self._unblock)
                break
            if budget <= 0:
                self._later()
                break
        if kept.over:
            self.bus.trim()  # this follower may have been what held the history past its bounds


def _page(kept: list[Kept], limit: int) -> dict[str, Any]:
    return {"events": [Raw(k.raw) for k in kept], "next": kept[-1].seq if len(kept) == limit else None}


def register(rpc: RpcServer, bus: EventBus) -> None:
    def events_list(params: p.EventsListParams, _conn: Connection) -> dict[str, Any]:
        kept = bus.query_kept(params.type, params.project, params.since, params.limit)
        out = _page(kept, params.limit)
        if out["next"] is not None and not isinstance(params.since, int):
            out["next"] = kept[-1].id  # page on the way the client asked (an id or a time)
        return out

    def events_query(params: p.EventsQueryParams, _conn: Connection) -> dict[str, Any]:
        kept = bus.query_kept(params.type, params.project, params.since, params.limit)
        out = _page(kept, params.limit)
        out["first_seq"], out["last_seq"] = bus.kept.first_seq, bus.kept.last_seq
        since = params.since
        if since is not None and since < bus.kept.first_seq - 1:
            out["gap"] = {"from": since + 1, "to": bus.kept.first_seq - 1, "lost": bus.kept.first_seq - 1 - since}
        return out

    def events_dlq(_params: p.NoParams, _conn: Connection) -> dict[str, Any]:
        return {"dead_letters": bus.dlq}

    def events_replay(params: p.EventIdParams, _conn: Connection) -> dict[str, Any]:
        dl = bus.replay(params.id)
        if dl is None:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: id: no dead letter {params.id!r}", {"param": "id"})
        return {"replayed": True, "id": dl.id, "event": dl.event, "subscriber": dl.subscriber}

    def events_subscribe(params: p.EventsSubscribeParams, conn: Connection) -> dict[str, Any]:
        conn.open_stream()
        last = bus.kept.last_seq
        # resuming from a number this state directory never reached (it was reset): start from now
        cursor = last if params.since is None or params.since > last else params.since
        follower = RpcFollower(bus, conn, params.type, params.project, cursor)
        bus.follow(follower)
        conn.on_close(follower.close)
        follower._later()  # after this reply: the reply goes out first, then the backlog (if resuming)
        return {"subscribed": True, "type": params.type, "project": params.project, "seq": cursor,
                "first_seq": bus.kept.first_seq}

    rpc.register("events.list", events_list)
    rpc.register("events.query", events_query)
    rpc.register("events.dlq", events_dlq)
    rpc.register("events.replay", events_replay)
    rpc.register("events.subscribe", events_subscribe)
