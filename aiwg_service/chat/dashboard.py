"""The ``aiwg`` tmux session: the chat REPL on top, the live status dashboard (``aiwgctl top``) below."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .conversations import ChatError
from .tmux import Tmux

__all__ = ["ALIASES", "Dashboard"]

#: The AIWG daemon called its session ``aiwg-daemon``: the same session answers to both names.
ALIASES = {"aiwg-daemon": "aiwg"}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def aiwgctl_path() -> str:
    """The aiwgctl next to this Python (the same install as the service), else the one on PATH."""
    here = Path(sys.executable).parent / "aiwgctl"
    if here.exists():
        return str(here)
    found = shutil.which("aiwgctl")
    if found is None:
        raise ChatError("aiwgctl is not installed next to the service nor on PATH")
    return found


class Dashboard:
    def __init__(self, tmux: Tmux, pane_env: Any) -> None:
        self.tmux = tmux
        self._pane_env = pane_env

    async def ensure(self, name: str, cwd: str, *, project: str | None = None) -> dict[str, Any]:
        """Create the session, or repair it (a pane that exited is replaced); never disturbs a healthy one."""
        name = ALIASES.get(name, name)
        if not NAME.match(name):
            raise ChatError(f"{name!r} is not a usable tmux session name (letters, digits, - and _)", param="name")
        repaired = False
        if await self.tmux.has_session(name):
            panes = await self.tmux.panes(name)
            if len(panes) == 2 and not any(panes):
                return {"session": name, "socket": str(self.tmux.socket), "created": False, "repaired": False}
            await self.tmux.kill_session(name)
            repaired = True
        ctl = aiwgctl_path()
        chat = [ctl, "chat"] + (["--project", project] if project else [])
        env = self._pane_env()
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        await self.tmux.new_session(name, chat, cwd, env=env, keep=False, extra=[
            ";", "split-window", "-v", "-l", "35%", "-t", f"={name}:", "-c", cwd, *env_args, "--", ctl, "top",
            ";", "select-pane", "-t", f"={name}:.{{top}}"])
        return {"session": name, "socket": str(self.tmux.socket), "created": not repaired, "repaired": repaired}
