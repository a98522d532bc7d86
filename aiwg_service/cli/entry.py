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


def fast_complete(environ: dict[str, str] | None = None) -> bool:
    """Bash's Tab on a command or subcommand word, answered from ``words.TREE`` without importing typer
    (under 100 ms instead of about a second); anything else (options, values, other shells) goes to typer."""
    import os

    env = os.environ if environ is None else environ
    if env.get("_AIWGCTL_COMPLETE") != "complete_bash":
        return False
    line = env.get("COMP_WORDS", "")
    if any(c in line for c in "\"'\\"):
        return False
    words = line.split()
    try:
        cword = int(env.get("COMP_CWORD", ""))
    except ValueError:
        return False
    args, incomplete = words[1:cword], (words[cword] if cword < len(words) else "")
    if incomplete.startswith("-") or any(a.startswith("-") for a in args):
        return False
    from .words import TREE

    if not args:
        names: tuple[str, ...] = tuple(TREE)
    elif len(args) == 1 and TREE.get(args[0]):
        names = TREE[args[0]]
    else:
        return False
    sys.stdout.write("\n".join(n for n in names if n.startswith(incomplete)))
    return True


def main() -> None:
    """The ``aiwgctl`` entry point: fast path, else typer; never a traceback."""
    try:
        if fast_complete():
            return
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
