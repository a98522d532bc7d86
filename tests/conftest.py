"""Shared fixtures (service_fixture.py) and the CI rule that no test passes by skipping.

With ``AIWG_NO_SKIP=1`` (``.ci/run`` sets it) every skipped test is reported as a failure, so a
test that needs root, ``unshare`` or a systemd user manager cannot silently not run in CI.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["service_fixture"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("AIWG_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but AIWG_NO_SKIP=1 forbids skips: {reason}"
