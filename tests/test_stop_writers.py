"""Stop waits for the writes in flight of the batched writers: with a slow disk (an injected stall in the
writer's thread, see aiwg_service/faults.py), every rule trace and every webhook delivery id still reaches disk."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest
from service_fixture import ServiceEnv, wait_for

from aiwg_service.webhooks.dedup import DeliveryLog

RULES = {
    "watch": {"debounce_ms": 0, "paths": [{"path": "src/", "events": ["create", "modify"]}]},
    "schedule": {"jobs": []},
    "rules": [{"id": "mark", "triggers": [{"type": "file.*", "paths": ["src/**"]}],
               "actions": [{"shell": "touch acted.txt"}], "mode": "queued", "max": 10}],
}


def test_stop_waits_for_traces_being_written(svc_env: ServiceEnv) -> None:
    env = svc_env
    env.env["AIWG_FAULTS"] = "traces.write_delay=2"
    (env.project / "src").mkdir()
    env.write_project_config(RULES)
    env.start()
    (env.project / "src" / "a.txt").write_text("x")
    wait_for(lambda: (env.project / "acted.txt").exists(), 20, what="the rule's action")
    # the flush has taken the traces and its thread is stalled on the "disk": stop now
    wait_for(lambda: "fault: stalling traces.write" in env.log_text(), 20, what="the trace write to begin")
    assert env.proc is not None
    env.proc.send_signal(signal.SIGTERM)
    assert env.proc.wait(30) == 0
    db = sqlite3.connect(env.state_dir / "automation.db")
    try:
        n = db.execute("SELECT count(*) FROM runs WHERE rule_id = 'mark'").fetchone()[0]
    finally:
        db.close()
    assert n >= 1
    assert "cannot write automation traces" not in env.log_text()


def test_closing_the_delivery_log_waits_for_ids_being_written(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A redelivery after a restart must not be published twice: close() waits for the write in its thread."""
    monkeypatch.setenv("AIWG_FAULTS", "dedup.write_delay=1")
    path = tmp_path / "webhooks.db"

    async def first_life() -> None:
        log = DeliveryLog(path)
        log.open()
        assert log.first_time("gh", "d-1")
        while not log._writing:  # the flush has taken the id and its thread is stalled on the "disk"
            await asyncio.sleep(0.01)
        await log.close()

    asyncio.run(first_life())
    monkeypatch.delenv("AIWG_FAULTS")

    async def second_life() -> bool:
        log = DeliveryLog(path)
        log.open()
        try:
            return log.first_time("gh", "d-1")
        finally:
            await log.close()

    assert asyncio.run(second_life()) is False  # remembered: a redelivery is a duplicate
