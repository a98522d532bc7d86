"""The ``trace.get`` RPC method."""

from __future__ import annotations

from typing import Any

from .. import protocol as p
from .graph import Tracer


def register(rpc: Any, tracer: Tracer) -> None:
    def trace_get(params: p.TraceGetParams, _conn: Any) -> dict[str, Any]:
        res = tracer.get(params.id)
        if res is None:
            raise p.RpcError(p.INVALID_PARAMS, f"Invalid params: id: nothing known by {params.id!r} (an event, "
                             "rule run, task or conversation id; events are kept in the last 1,000)",
                             {"param": "id"})
        return res

    rpc.register("trace.get", trace_get)
