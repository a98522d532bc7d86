"""``aiwgctl attach`` and ``aiwgctl session``: the tmux side of the service.

The service owns the tmux server (on ``$XDG_RUNTIME_DIR/aiwg/tmux.sock``, in its own systemd scope); these
commands ask it to create or repair sessions, then hand the terminal to ``tmux attach`` (exec: tmux
becomes this process, so the terminal and signals are tmux's).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import render
from .core import call, fail, project_param

session_app = typer.Typer(help="Interactive agent sessions in tmux: new, list, attach, send, kill.",
                          no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _project(path: Path | None) -> str | None:
    return project_param(path)


def _exec_attach(socket: str, session: str, read_only: bool) -> None:
    if shutil.which("tmux") is None:
        fail("tmux is not installed: install it (Debian/Ubuntu: `sudo apt-get install tmux`)")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("attaching needs a terminal (use --detach to create the session only)")
    argv = ["tmux", "-S", socket, "attach-session", *(["-r"] if read_only else []), "-t", f"={session}"]
    # From inside another tmux, $TMUX makes tmux refuse to nest; ours is a different server, so nest.
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    sys.stdout.flush()
    os.execvpe("tmux", argv, env)


def attach(
    name: Annotated[str, typer.Option("--name", help="tmux session (aiwg-daemon is the AIWG name for aiwg)")] = "aiwg",
    read_only: Annotated[bool, typer.Option("--read-only", "-r", help="attach read-only (tmux attach -r)")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="create or repair the session, do not attach")] = False,
    project: Annotated[Path | None, typer.Option("--project", help="project for the chat pane")] = None,
    json: JsonOpt = False,
) -> None:
    """The dashboard in tmux: the chat REPL on top, `aiwgctl top` below (created or repaired as needed)."""
    res = call("session.dashboard", {"name": name, "project": _project(project)})
    if detach or json:
        if json:
            render.emit_json(res)
        else:
            how = "created" if res["created"] else "repaired" if res["repaired"] else "running"
            print(f"{res['session']}: {how} (tmux -S {res['socket']} attach -t ={res['session']})")
        return
    _exec_attach(res["socket"], res["session"], read_only)


@session_app.command("new")
def new(
    prompt: Annotated[str | None, typer.Argument(help="first message for the agent")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="claude's --agent (a subagent definition)")] = None,
    worktree: Annotated[str | None, typer.Option("--worktree", help="run in a fresh git worktree of the project "
                                                 "on this new branch")] = None,
    project: Annotated[Path | None, typer.Option("--project", help="project root")] = None,
    attach_now: Annotated[bool, typer.Option("--attach", help="attach to it at once")] = False,
    json: JsonOpt = False,
) -> None:
    """Open claude (interactive) in its own tmux session; prints the session id."""
    res = call("session.new", {"prompt": prompt, "agent": agent, "worktree": worktree,
                               "project": _project(project)}, timeout=None)
    if json:
        render.emit_json(res)
    else:
        print(res["id"])
        if res.get("worktree"):
            print(f"worktree {res['worktree']} (branch {res['branch']})", file=sys.stderr)
    if attach_now:
        _exec_attach(res["socket"], res["tmux"], False)


@session_app.command("list")
def list_(
    project: Annotated[Path | None, typer.Option("--project", help="only this project")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="include sessions that exited")] = False,
    json: JsonOpt = False,
) -> None:
    """Sessions and their state: working, waiting for input, exited."""
    res = call("session.list", {"project": _project(project), "all": all_})
    if json:
        render.emit_json(res)
        return
    rows = []
    for s in res["sessions"]:
        state = s["state"] + (f" ({s['exit_status']})" if s["state"] == "exited" and s.get("exit_status")
                              is not None else "")
        rows.append((s["id"], state, s.get("branch") or "-", s["created_at"][:19].replace("T", " "), s["cwd"]))
    render.table(["session", "state", "branch", "started", "where"], rows,
                 empty="no sessions (start one with `aiwgctl session new`)")


def _find(sid: str) -> dict[str, Any]:
    res = call("session.list", {"all": True})
    for s in res["sessions"]:
        if s["id"] == sid:
            return dict(s)
    fail(f"no session {sid!r} (see `aiwgctl session list`)")


@session_app.command("attach")
def attach_session(
    session_id: Annotated[str, typer.Argument(help="session id")],
    read_only: Annotated[bool, typer.Option("--read-only", "-r", help="attach read-only")] = False,
) -> None:
    """Attach this terminal to a session (detach again with the tmux prefix, then d)."""
    s = _find(session_id)
    if s["state"] == "exited":
        fail(f"session {session_id} has exited; its output: `aiwgctl task logs {session_id}`")
    _exec_attach(s["socket"], s["tmux"], read_only)


@session_app.command("send")
def send(session_id: Annotated[str, typer.Argument(help="session id")],
         text: Annotated[str, typer.Argument(help="what to type (Enter is pressed after it)")]) -> None:
    """Type a line into a session."""
    call("session.send", {"id": session_id, "text": text})


@session_app.command("show")
def show(session_id: Annotated[str, typer.Argument(help="session id")], json: JsonOpt = False) -> None:
    """Print what the session's screen shows now."""
    res = call("session.capture", {"id": session_id})
    if json:
        render.emit_json(res)
    else:
        sys.stdout.write(res["screen"].rstrip() + "\n")
        print(f"-- {res['state']}", file=sys.stderr)


@session_app.command("kill")
def kill(
    session_id: Annotated[str, typer.Argument(help="session id")],
    keep_worktree: Annotated[bool, typer.Option("--keep-worktree", help="leave its worktree (and changes) on "
                                                "disk")] = False,
    json: JsonOpt = False,
) -> None:
    """End a session: its output goes to the task log; its worktree is removed unless it has changes."""
    res = call("session.kill", {"id": session_id, "keep_worktree": keep_worktree})
    if json:
        render.emit_json(res)
        return
    msg = f"{session_id}: {'killed' if res.get('was_running', True) else 'had already ended'}"
    if res.get("worktree_removed"):
        msg += f"; worktree removed (branch {res['branch']} kept)"
    elif res.get("worktree") and res.get("worktree_exists", True):
        msg += f"; worktree kept at {res['worktree']}"
    elif res.get("worktree"):
        msg += f"; its worktree is already gone (branch {res['branch']} kept)"
    print(msg)
