"""The file watcher as a service subsystem: fed each project's ``watch`` section, publishing on the bus."""

from __future__ import annotations

from typing import Any

from ..config import Configs
from .bus import EventBus
from .watcher import FileWatcher, WatchSpec


class WatcherSubsystem:
    name = "watcher"

    def __init__(self, bus: EventBus) -> None:
        self.engine = FileWatcher(lambda type, root, data: bus.publish(type, root, data, "watch"))
        self.engine.slice_walks = True  # a big project added or reloaded never holds the loop for its walk

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    def apply(self, configs: Configs) -> None:
        for root in self.engine.roots():
            if root not in configs.projects:
                self.engine.remove_root(root)
        for root, project in configs.projects.items():
            w = project.config.watch
            specs = [WatchSpec(s.path, tuple(s.events), tuple(s.extensions), tuple(s.ignore)) for s in w.paths]
            self.engine.set_root(root, specs, debounce_ms=w.debounce_ms, enabled=w.enabled)

    def health(self) -> dict[str, Any]:
        h = self.engine.health()
        roots = h.get("roots", {})
        h["watched_dirs"] = sum(r["watched_dirs"] for r in roots.values())
        h["unwatched_dirs"] = sum(r["unwatched_dirs"] for r in roots.values())
        return h
