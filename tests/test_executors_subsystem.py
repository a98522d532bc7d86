"""The executors subsystem keeps the registry in step with the section across reloads, and its gate holds
tasks for a full or down executor (with the reason) and wakes the supervisor when the executor is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiwg_service.executors.registry import Executors
from aiwg_service.executors.subsystem import ExecutorsSubsystem


class Local:
    name = "local"

    async def close(self) -> None:
        return None


def configs(executors: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(service=SimpleNamespace(executors=executors))


def test_reload_adds_replaces_and_removes(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm clients here: probes fail fast and say so

    async def main() -> None:
        current = configs({"cluster": {"kind": "slurm", "partition": "a"}, "local": {"kind": "local",
                                                                                   "max_parallel": 2}})
        reg = Executors(Local())  # type: ignore[arg-type]
        sub = ExecutorsSubsystem(lambda: current, tmp_path, reg)
        await sub.start()
        first = reg.get("cluster")
        assert sorted(reg.names()) == ["cluster", "local"] and sub.limit("local") == 2
        sub.apply(configs({"cluster": {"kind": "slurm", "partition": "a"}}))
        assert reg.get("cluster") is first  # unchanged: kept
        sub.apply(configs({"cluster": {"kind": "slurm", "partition": "b"}}))
        assert reg.get("cluster") is not first and reg.get("cluster").cfg.partition == "b"  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10  # the probe runs in the background: wait for its verdict
        while sub.rows()[0]["state"] != "down" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sub.rows()[0]["state"] == "down" and "squeue not found on PATH" in sub.rows()[0]["last_error"]
        sub.apply(configs({}))
        assert reg.names() == ["local"] and sub.limit("local") is None
        await sub.stop()

    asyncio.run(main())


def test_gate_holds_full_and_down_executors_and_wakes_when_back(tmp_path: Path) -> None:
    class Flaky:
        name = "box"

        def __init__(self) -> None:
            self.state, self.probes = "down", 0

        def health(self) -> dict[str, Any]:
            return {"kind": "ssh", "state": self.state, "last_error": "connection refused"}

        async def probe(self) -> None:
            self.probes += 1
            self.state = "up"

        async def close(self) -> None:
            return None

    async def main() -> None:
        woke = asyncio.Event()
        reg = Executors(Local(), Flaky())  # type: ignore[arg-type]
        sub = ExecutorsSubsystem(lambda: configs({"local": {"kind": "local", "max_parallel": 1}}), tmp_path, reg,
                                 on_available=woke.set)
        await sub.start()
        assert sub.gate("local", 0) is None
        assert sub.gate("local", 1) == "executor local is at its max_parallel (1)"
        why = sub.gate("box", 0)
        assert why is not None and "box is down: connection refused" in why
        await asyncio.wait_for(woke.wait(), 10)  # probed after the backoff, then the supervisor is woken
        assert sub.gate("box", 0) is None
        await sub.stop()

    asyncio.run(main())
