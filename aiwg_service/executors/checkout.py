"""The checkout question: the remote side must hold the project at the same commit as here.

``remote_path`` templates (``{name}`` = the project directory's name) resolve here, and
:func:`local_head` reads this side's ``HEAD``; each remote executor asks its own side the same way
(``git -C <path> rev-parse HEAD``) and compares with :func:`mismatch`.
"""

from __future__ import annotations

import asyncio
import os

from .. import command

__all__ = ["git_head", "mismatch", "remote_cwd"]


def remote_cwd(template: str | None, local_cwd: str) -> str:
    """Where the task runs over there: the template with ``{name}`` filled in, else the same path."""
    if not template:
        return local_cwd
    return template.replace("{name}", os.path.basename(os.path.normpath(local_cwd)))


async def git_head(path: str, env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """``(commit, "")`` of the checkout at ``path`` on this machine, or ``(None, why not)``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", "-C", path, "rev-parse", "--verify", "-q", "HEAD", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    except OSError as e:
        return None, f"cannot run git: {e.strerror or e}"
    try:
        out, err = await command.finish(proc, command.GIT_TIMEOUT_S, f"git rev-parse in {path}")
    except command.CommandTimeout as e:
        return None, str(e)
    if proc.returncode != 0:
        if not os.path.isdir(path):
            return None, f"{path} does not exist"
        return None, f"{path} is not a git checkout with a commit ({err.decode(errors='replace').strip()})"
    return out.decode().strip(), ""


def mismatch(local: str | None, remote: str | None, where: str) -> str | None:
    """The error to show when the two sides differ (None: both at the same commit, or no git here)."""
    if local is None:
        return None  # the project itself is not a git checkout: nothing to compare
    if remote is None:
        return f"{where} has no checkout at a commit"
    if local != remote:
        return (f"{where} is at commit {remote[:12]}, the project here at {local[:12]}: update it "
                f"(or set \"sync\": \"git-push\")")
    return None
