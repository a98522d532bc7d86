"""The ``events.*`` RPC methods: history, dead letters, replay, and live subscriptions."""

from __future__ import annotations

from typing import Any

from .. import protocol as p
from ..rpc import Connection, RpcServer
from .bus import EventBus


def register(rpc: RpcServer, bus: EventBus) -> None:
    def events_list(params: p.EventsListParams, _conn: Connection) -> dict[str, Any]:
        events = bus.query(params.type, params.project, params.since, params.limit)
        nxt = events[-1].id if len(events) == params.limit else None
        return {"events": events, "next": nxt}

    def events_dlq(_params: p.NoParams, _conn: Connection) -> dict[str, Any]:
        return {"dead_letters": bus.dlq}

    def events_replay(params: p.EventIdParams, _conn: Connection) -> dict[str, Any]:
        dl = bus.replay(params.id)
        if dl is None:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: id: no dead letter {params.id!r}", {"param": "id"})
        return {"replayed": True, "id": dl.id, "event": dl.event, "subscriber": dl.subscriber}

    def events_subscribe(params: p.EventsSubscribeParams, conn: Connection) -> dict[str, Any]:
        dropped = 0
        project = params.project
        conn.open_stream()

        def forward(ev: p.Event) -> None:
            # A client that does not read its events has them dropped (and counted) once its connection's
            # byte budget is full: never buffered without bound.
            nonlocal dropped
            if project is not None and ev.project != project:
                return
            if conn.is_closing:
                return
            if not conn.writable:
                dropped += 1
                conn.server.notifications_dropped += 1
                return
            conn.notify(p.NOTIFY_EVENT, ev)

        sub = bus.subscribe(params.type, forward, name=f"rpc-subscriber:{conn.peer_pid}", max_queue=10_000,
                            retries=0)
        conn.on_close(lambda: bus.unsubscribe(sub))
        return {"subscribed": True, "type": params.type, "project": project}

    rpc.register("events.list", events_list)
    rpc.register("events.dlq", events_dlq)
    rpc.register("events.replay", events_replay)
    rpc.register("events.subscribe", events_subscribe)
