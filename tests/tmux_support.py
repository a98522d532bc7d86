"""A private tmux server for tests: type into panes with send-keys, read them with capture-pane."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from service_fixture import wait_for

# A tmux server keeps the signal mask of the client that started it: with SIGCHLD blocked (as a parent shell
# may leave it) it never reaps its panes.  Children of this test process get it unblocked.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


class Tmux:
    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["tmux", "-S", str(self.socket), *args], env=self.env, capture_output=True, text=True,
                             timeout=20)
        if check:
            assert res.returncode == 0, f"tmux {' '.join(args)}: {res.stderr}"
        return res

    def new(self, name: str, argv: list[str], cwd: Path, width: int = 160, height: int = 50) -> None:
        # One tmux command line: the pane is kept (remain-on-exit) before its process can exit.
        self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), "-c", str(cwd), *argv,
                 ";", "set-option", "-w", "remain-on-exit", "on")

    def keys(self, name: str, *keys: str) -> None:
        self.run("send-keys", "-t", f"={name}:", *keys)

    def type(self, name: str, text: str) -> None:
        self.run("send-keys", "-t", f"={name}:", "-l", text)
        self.run("send-keys", "-t", f"={name}:", "Enter")

    def screen(self, name: str) -> str:
        return self.run("capture-pane", "-p", "-J", "-S", "-200", "-t", f"={name}:").stdout

    def wait(self, name: str, text: str, timeout: float = 30.0) -> str:
        try:
            return wait_for(lambda: self.screen(name) if text in self.screen(name) else None, timeout,
                            interval=0.05, what=f"{text!r} in tmux pane {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the pane shows:\n{self.screen(name)}") from None

    def wait_after(self, name: str, anchor: str, text: str) -> str:
        """Until ``text`` shows up after the last ``anchor`` on screen (not an older copy of it)."""
        def seen() -> str | None:
            screen = self.screen(name)
            i = screen.rfind(anchor)
            return screen if i >= 0 and text in screen[i + len(anchor):] else None

        try:
            return wait_for(seen, 30, interval=0.05, what=f"{text!r} after {anchor!r} in tmux pane {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the pane shows:\n{self.screen(name)}") from None

    def wait_prompt(self, name: str, prompt: str) -> str:
        """Until the pane's last line is the prompt again (keys typed before it would reach the wrong reader)."""
        def ready() -> str | None:
            screen = self.screen(name)
            lines = [ln for ln in screen.splitlines() if ln.strip()]
            return screen if lines and lines[-1].strip() == prompt else None

        try:
            return wait_for(ready, 30, interval=0.05, what=f"the prompt {prompt!r} in tmux pane {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the pane shows:\n{self.screen(name)}") from None

    def kill(self) -> None:
        self.run("kill-server", check=False)
