"""``aiwgctl chat``: the command line side of conversations (the REPL itself is in ``chat_repl``)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import protocol as p
from .core import START_HINT, fail


def chat(
    conversation: Annotated[str | None, typer.Argument(
        help="conversation to continue (default: the last one used); '-' reads one message from stdin")] = None,
    project: Annotated[Path | None, typer.Option("--project", help="project root (needed when the service "
                                                 "serves several)")] = None,
    new: Annotated[bool, typer.Option("--new", help="start a new conversation")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="send this one message, print the "
                                                "answer and exit (0 done, 1 failed); without CONVERSATION it starts "
                                                "a new conversation (scripts never continue one by accident)")] = None,
) -> None:
    """Talk to the agent; each conversation keeps its context (one resumed agent session)."""
    from ..client import NotRunning
    from .chat_repl import one_shot, repl

    proj = str(project.expanduser().resolve()) if project is not None else None
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
            code = asyncio.run(one_shot(message, None if new else conv, proj))
        else:
            if not sys.stdin.isatty():
                fail("the chat REPL needs a terminal; use -m MESSAGE or `aiwgctl chat -` for scripts")
            code = asyncio.run(repl(conv, proj, new))
    except NotRunning as exc:
        fail(f"{exc}; {START_HINT}")
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        fail(f"aiwg-service is not running ({exc.strerror}); {START_HINT}")
    except ConnectionError as exc:
        fail(f"lost the service: {exc}")
    except p.RpcError as exc:
        fail(exc.message)
    raise typer.Exit(code)
