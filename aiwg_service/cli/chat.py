"""``aiwgctl chat``: the command line side of conversations (the REPL itself is in ``chat_repl``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import protocol as p
from .core import START_HINT, fail, project_param


def chat(
    conversation: Annotated[str | None, typer.Argument(
        help="conversation to continue (default: the last one started at a terminal); '-' reads one message "
             "from stdin; 'list' lists the conversations")] = None,
    project: Annotated[Path | None, typer.Option("--project", help="project root (needed when the service "
                                                 "serves several)")] = None,
    new: Annotated[bool, typer.Option("--new", help="start a new conversation")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="send this one message, print the "
                                                "answer and exit (0 done, 2 held by a budget, 1 failed); without "
                                                "CONVERSATION it starts a new conversation (scripts never continue "
                                                "one by accident)")] = None,
    json: Annotated[bool, typer.Option("--json", help="with list: print machine-readable JSON")] = False,
    take: Annotated[bool, typer.Option("--take", help="continue a conversation a chat bridge started (it is "
                                       "read-only here otherwise); the chat starts a new one")] = False,
) -> None:
    """Talk to the agent; each conversation keeps its context (one resumed agent session).
    `aiwgctl chat list` lists the conversations (of the project, inferred from the working directory)."""
    from ..client import NotRunning
    from .chat_repl import repl
    from .chat_send import one_shot

    proj = project_param(project)
    if conversation == "list" and message is None and not new:
        list_conversations(proj, json)
        return
    conv = conversation
    if conversation == "-":
        conv = None
        message = sys.stdin.read().strip()
        if not message:
            fail("no message on stdin")
    elif message is not None and conversation is None and not new:
        conv = None  # -m without a conversation asks a fresh one, as `--new -m` does
    try:
        if message is not None:
            code = asyncio.run(one_shot(message, None if new else conv, proj, take))
        else:
            if not sys.stdin.isatty():
                fail("the chat REPL needs a terminal; use -m MESSAGE or `aiwgctl chat -` for scripts")
            code = asyncio.run(repl(conv, proj, new, take=take))
    except NotRunning as exc:
        fail(f"{exc}; {START_HINT}")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        fail(f"aiwg-service is not running ({exc.strerror}); {START_HINT}")
    except ConnectionError as exc:
        fail(f"lost the service: {exc}")
    except p.RpcError as exc:
        fail(exc.message)
    raise typer.Exit(code)


def list_conversations(project: str | None, json: bool) -> None:
    """``aiwgctl chat list``: newest use first."""
    from . import render
    from .core import call

    params: dict[str, object] = {"limit": 100}
    if project is not None:
        params["project"] = project
    res = call("chat.list", params)
    if json:
        render.emit_json(res)
        return
    convs = res.get("conversations", res) if isinstance(res, dict) else res
    render.table(["id", "project", "turns", "last used", "title"],
                 [(c["id"], c["project"], c.get("turns", 0), (c.get("last_used_at") or "").replace("T", " ")[:19],
                   (c.get("title") or "")[:50]) for c in convs],
                 empty="no conversations yet (start one with `aiwgctl chat`)")
