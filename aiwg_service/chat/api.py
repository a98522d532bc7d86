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
        priority = 5 if params.priority is None else params.priority  # the AIWG daemon's default for chat
        return conversations().send(params.message, conversation=params.conversation, project=params.project,
                                    priority=priority, take=params.take).to_dict()

    def list_(params: p.ChatListParams) -> dict[str, Any]:
        return {"conversations": conversations().list(params.project, params.limit, terminal=params.terminal)}

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


def register_sessions(rpc: Any, sessions: Callable[[], Any], dashboard: Callable[[], Any],
                      default_cwd: Callable[[str | None], str]) -> None:
    """``session.*``: interactive agent sessions in tmux, and the dashboard session."""
    from .tmux import TmuxError

    def guarded(fn: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
        async def handler(params: Any, _conn: Any) -> Any:
            try:
                return await fn(params)
            except ChatError as exc:
                raise rpc_error(exc) from None
            except TmuxError as exc:
                raise p.RpcError(p.SERVER_BUSY, str(exc), {"tmux": True}) from None
        return handler

    async def new(params: p.SessionNewParams) -> Any:
        return await sessions().new(project=params.project, agent=params.agent, worktree=params.worktree,
                                    prompt=params.prompt)

    async def list_(params: p.SessionListParams) -> Any:
        return {"sessions": await sessions().list(params.project, all=params.all)}

    async def capture(params: p.SessionIdParams) -> Any:
        return await sessions().capture(params.id)

    async def send(params: p.SessionSendParams) -> Any:
        return await sessions().send(params.id, params.text)

    async def kill(params: p.SessionKillParams) -> Any:
        return await sessions().kill(params.id, keep_worktree=params.keep_worktree)

    async def dash(params: p.DashboardParams) -> Any:
        return await dashboard().ensure(params.name, default_cwd(params.project), project=params.project)

    rpc.register("session.new", guarded(new))
    rpc.register("session.list", guarded(list_))
    rpc.register("session.capture", guarded(capture))
    rpc.register("session.send", guarded(send))
    rpc.register("session.kill", guarded(kill))
    rpc.register("session.dashboard", guarded(dash))
