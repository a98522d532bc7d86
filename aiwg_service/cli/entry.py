"""The ``aiwgctl`` entry point: ``ping`` and ``status`` without typer, everything else through it.

Never a traceback: every failure is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys

from . import render
from .core import CliExit, cmd_ping, cmd_status, options


def json_anywhere(argv: list[str]) -> list[str]:
    """``--json`` is accepted wherever a user puts it (``aiwgctl --json status``, ``aiwgctl task --json list``):
    every ``--json`` before a ``--`` moves to the end of the command's own options."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--json"]
    if len(head) == end:
        return argv
    return [*head, "--json", *argv[end:]]


FAST = {"ping": cmd_ping, "status": cmd_status}


def fast_path(argv: list[str]) -> bool:
    """Handle ``[--socket PATH] ping|status [--json]`` without typer; False for anything else."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "--socket":
        options.socket = args[1]
        args = args[2:]
    elif args and args[0].startswith("--socket="):
        options.socket = args[0].split("=", 1)[1]
        args = args[1:]
    if not args or args[0] not in FAST or any(a not in ("--json",) for a in args[1:]):
        options.socket = None
        return False
    FAST[args[0]]("--json" in args[1:])
    return True


def main() -> None:
    """The ``aiwgctl`` entry point: fast path, else typer; never a traceback."""
    try:
        argv = json_anywhere(sys.argv[1:])
        if not fast_path(argv):
            from .app import app

            app(args=argv, prog_name="aiwgctl")
    except CliExit as exc:
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # the promise: no traceback ever reaches a user
        render.error(f"unexpected error: {type(exc).__name__}: {exc} (please report this)")
        sys.exit(2)
