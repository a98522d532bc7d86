"""The loop-lag monitor: a stall is measured, logged past 100 ms naming the code that ran, and the probe
sleeps when the service is idle (no timer at idle); in the real service it shows in daemon.status."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest
from service_fixture import ServiceEnv, wait_for

from aiwg_service import looplag


def busy_for_a_while(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # pure Python: the sampler thread gets the GIL between bytecodes
        pass


def test_a_stall_is_measured_and_named_then_the_probe_sleeps(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> dict:
        mon = looplag.LoopLag()
        mon.install()
        try:
            await asyncio.sleep(0.05)
            looplag.poke()
            busy_for_a_while(0.3)
            # and on until the sampler thread has seen this stall (a loaded machine may schedule it late)
            end = time.monotonic() + 10
            while mon._sampled_due != mon._due and time.monotonic() < end:
                pass
            await asyncio.sleep(0.05)
            snap = looplag.snapshot()
            deadline = time.monotonic() + 60  # a loaded machine may take a while to give it a quiet second
            while mon.snapshot()["armed"] and time.monotonic() < deadline:  # disarms after a quiet second
                await asyncio.sleep(0.1)
            snap["armed_after_quiet"] = mon.snapshot()["armed"]
            return snap
        finally:
            mon.close()

    # the monitor's own logger, heard directly (whatever an earlier test in this process did to the root's)
    heard: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = heard.append  # type: ignore[method-assign]
    logger = logging.getLogger("aiwg.loop")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="aiwg.loop"):
            snap = asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    # (a loaded machine may add a stall of its own: at least ours, and ours named)
    assert snap["max_ms"] >= 250 and snap["stalls_over_100ms"] >= 1, snap
    assert any("event loop blocked for" in r.getMessage() and "busy_for_a_while" in r.getMessage()
               for r in heard), ([r.getMessage() for r in heard], snap)
    assert snap["armed_after_quiet"] is False, snap
    assert looplag.snapshot() == {}  # closed: nothing installed


def test_daemon_status_shows_loop_lag(service: ServiceEnv) -> None:
    assert service.proc is not None
    loop = service.call("daemon.status")["loop"]  # the request itself armed the probe
    assert {"last_ms", "max_ms", "stalls_over_100ms", "histogram_ms"} <= set(loop)
    os.kill(service.proc.pid, signal.SIGSTOP)  # the whole process stalls: the probe fires late
    try:
        time.sleep(0.3)  # the stall being measured, not a wait for a condition
    finally:
        os.kill(service.proc.pid, signal.SIGCONT)
    loop = wait_for(lambda: (lp := service.call("daemon.status")["loop"])["stalls_over_100ms"] and lp, 10,
                    what="the stall in daemon.status")
    assert loop["max_ms"] >= 250, loop
    assert "event loop blocked for" in service.log_text()
