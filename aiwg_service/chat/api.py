"""The ``chat.*`` RPC methods: thin adapters from params to :class:`Conversations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import protocol as p
from .conversations import ChatError, Conversations

__all__ = ["register", "rpc_error"]


def rpc_error(exc: ChatError) -> p.RpcError:
    """-32602 naming the param for bad input; -32000 (busy) for a conversation still answering."""
    if exc.busy:
        return p.RpcError(p.SERVER_BUSY, str(exc), {"busy": True, **exc.data})
    msg = f"Invalid params: {exc.param}: {exc}" if exc.param else str(exc)
    return p.RpcError(p.INVALID_PARAMS, msg, {"param": exc.param, **exc.data})


def register(rpc: Any, conversations: Callable[[], Conversations]) -> None:
    """``conversations`` is a getter: the store opens when the subsystem starts, after registration."""

    def guarded(fn: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
        def handler(params: Any, _conn: Any) -> Any:
            try:
                return fn(params)
            except ChatError as exc:
                raise rpc_error(exc) from None
        return handler

    def send(params: p.ChatSendParams) -> dict[str, Any]:
        return conversations().send(params.message, conversation=params.conversation, project=params.project,
                                    priority=params.priority).to_dict()

    def list_(params: p.ChatListParams) -> dict[str, Any]:
        return {"conversations": conversations().list(params.project, params.limit)}

    def history(params: p.ChatConversationParams) -> dict[str, Any]:
        return conversations().history(params.conversation)

    def fork(params: p.ChatForkParams) -> dict[str, Any]:
        conv = conversations().fork(params.conversation, params.at_turn)
        return {"conversation": conv.id, "parent": conv.parent, "at_turn": conv.fork_turn, "mode": conv.fork_mode,
                "title": conv.title}

    def delete(params: p.ChatConversationParams) -> dict[str, Any]:
        return conversations().delete(params.conversation)

    rpc.register("chat.send", guarded(send))
    rpc.register("chat.list", guarded(list_))
    rpc.register("chat.history", guarded(history))
    rpc.register("chat.fork", guarded(fork))
    rpc.register("chat.delete", guarded(delete))
