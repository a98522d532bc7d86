"""A real bus and a real engine on one project dir, with recording submit_task/doctor callables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiwg_service import config, schemas  # noqa: F401  (schemas registers every section)
from aiwg_service.events.bus import EventBus
from aiwg_service.protocol import Event
from aiwg_service.rules.engine import AutomationEngine

F = ".aiwg/daemon.json"


def parse(rules: list[dict[str, Any]], jobs: list[dict[str, Any]] | None = None,
          extra: dict[str, Any] | None = None) -> config.Config:
    """Through config.parse, exactly as the service loads a project file."""
    return config.parse(json.dumps({"rules": rules, "schedule": {"jobs": jobs or []}, **(extra or {})}), F).config


def config_errors(data: dict[str, Any]) -> list[str]:
    try:
        config.parse(json.dumps(data), F)
    except config.ConfigError as exc:
        return exc.errors
    return []


class Harness:
    def __init__(self, tmp: Path, *, state_dir: Path | None = None, **engine_kw: Any) -> None:
        self.tmp = tmp
        self.project = tmp / "proj"
        self.project.mkdir(exist_ok=True)
        self.root = str(self.project)
        self.state_dir = state_dir or tmp / "state"
        self.submitted: list[dict[str, Any]] = []
        self.doctor_calls: list[str] = []
        self.doctor_result: dict[str, Any] = {"ok": True, "checks": [{"name": "config", "ok": True, "detail": ""}]}
        self.submit_error: str | None = None
        self.engine_kw = engine_kw
        self.events: list[Event] = []
        self.bus = EventBus(None, retry_delays=(0.01,))
        self.engine: AutomationEngine | None = None

    def submit(self, project: str, prompt: str, agent: str | None, priority: int, source: str,
               timeout_s: float | None, origin: dict[str, Any]) -> str:
        if self.submit_error:
            raise RuntimeError(self.submit_error)
        self.submitted.append({"project": project, "prompt": prompt, "agent": agent, "priority": priority,
                               "source": source, "timeout_s": timeout_s, "origin": origin})
        return f"task-{len(self.submitted):04d}"

    def doctor(self, project: str) -> dict[str, Any]:
        self.doctor_calls.append(project)
        return self.doctor_result

    async def start(self, rules: list[dict[str, Any]] | None = None, jobs: list[dict[str, Any]] | None = None,
                    start_bus: bool = True, extra: dict[str, Any] | None = None) -> AutomationEngine:
        if start_bus:
            await self.bus.start()
            self.bus.subscribe("*", self.events.append, name="recorder")
        self.engine = AutomationEngine(self.bus, self.state_dir, submit_task=self.submit, doctor=self.doctor,
                                       **self.engine_kw)
        await self.engine.start()
        if rules is not None or jobs is not None:
            self.engine.set_project(self.root, parse(rules or [], jobs, extra))
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()
        await self.bus.stop()

    def publish(self, type: str, data: dict[str, Any] | None = None, source: str = "watch") -> Event:
        return self.bus.publish(type, self.root, data or {}, source)

    async def until(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or pred}")
            await asyncio.sleep(0.01)

    async def idle(self, timeout: float = 10.0) -> None:
        """Bus queues empty and no run in flight or queued."""
        assert self.engine is not None
        eng = self.engine

        def quiet() -> bool:
            return (all(not s.queue for s in self.bus.subs)
                    and all(not st.running and not st.queue for st in eng.states.values()))

        await self.until(quiet, timeout, "the engine to go idle")
        await asyncio.sleep(0.02)
        if not quiet():
            await self.until(quiet, timeout, "the engine to go idle")

    def state(self, rule_id: str) -> Any:
        assert self.engine is not None
        return self.engine.states.get((self.root, rule_id))

    def runs(self, rule_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        assert self.engine is not None
        return self.engine.store.runs(self.root, rule_id, limit)

    def outcomes(self, rule_id: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs(rule_id):
            out[r["outcome"]] = out.get(r["outcome"], 0) + 1
        return out

    def of_type(self, t: str) -> list[Event]:
        return [e for e in self.events if e.type == t]


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
