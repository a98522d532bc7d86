"""OwnedTasks: a failure is logged once with its owner and what it was (never "never retrieved"), its
on_error runs, and close() lets tasks finish for the grace, then cancels the rest and waits for them."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from aiwg_service.owned import OwnedTasks


def test_failures_are_logged_with_context_and_close_ends_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[BaseException] = []
    finished: list[str] = []

    async def boom() -> None:
        raise ValueError("broken")

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            finished.append("forever unwound")

    async def main() -> None:
        owned = OwnedTasks("thing")
        owned.spawn(boom(), "the boom", on_error=seen.append)
        owned.spawn(quick(), "a quick one")
        owned.spawn(forever(), "a long one")
        assert not await owned.wait(0.2)  # the long one is still there
        await owned.close(grace=0.05)
        assert len(owned) == 0 and owned.failures == 1

    with caplog.at_level(logging.ERROR, logger="aiwg.owned"):
        asyncio.run(main())
        gc.collect()
    assert [str(e) for e in seen] == ["broken"]
    assert finished == ["quick", "forever unwound"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["thing: the boom failed: broken"]
