"""Which project each chat's ``/ask`` works in (``/project NAME``), remembered across restarts.

One small private JSON file in the state directory, ``{chat key: project root}``; a chat with no binding
uses ``messaging.project``, else the only project served.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..atomic import write_atomic

log = logging.getLogger("aiwg.messaging")


class ChatProjects:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._map is None:
            try:
                data = json.loads(self.path.read_bytes())
                self._map = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except FileNotFoundError:
                self._map = {}
            except (OSError, ValueError) as exc:
                log.warning("messaging: %s unreadable (%s); chats start with no project picked", self.path, exc)
                self._map = {}
        return self._map

    def get(self, chat_key: str) -> str | None:
        return self._load().get(chat_key)

    def set(self, chat_key: str, root: str) -> None:
        m = self._load()
        m[chat_key] = root
        try:
            write_atomic(self.path, json.dumps(m, indent=1).encode() + b"\n")
        except OSError as exc:
            log.warning("messaging: cannot save %s: %s (the choice holds until a restart)", self.path,
                        exc.strerror or exc)


def pick(name: str, served: list[str]) -> str | None:
    """The served root ``name`` means: its path, or its directory's name when only one has it."""
    if name in served:
        return name
    real = os.path.realpath(os.path.expanduser(name)) if name.startswith(("/", "~", ".")) else None
    if real in served:
        return real
    by_name = [r for r in served if os.path.basename(r) == name]
    return by_name[0] if len(by_name) == 1 else None
