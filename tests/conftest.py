"""Shared fixtures, and the CI rule that no test passes by skipping.

- ``service_fixture.py``: the real ``aiwg-service`` as a subprocess with private XDG directories
  (``svc_env``, ``service``).
- ``user_manager`` (session-scoped) boots a private systemd user manager; see ``systemd_env.py`` for
  how and ``UserManager`` for the API. Tests using it are marked ``systemd`` automatically.
- With ``AIWG_NO_SKIP=1`` (``.ci/run`` sets it) every skipped test is reported as a failure, so a test
  that needs root, ``unshare`` or a systemd user manager cannot silently not run in CI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systemd_env import UserManager, require_private_manager_support

pytest_plugins = ["service_fixture", "trust_support", "remote_fixtures"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"user_manager", "sd"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.systemd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("AIWG_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped, but AIWG_NO_SKIP=1 forbids skips: {reason}"


#: What a skipped test's reason or id says about the protection it checks (first match wins).
SECURITY_KINDS = (
    ("two users / peer uid", ("another uid", "create users", "peer", "two_user", "other_user", "trust_socket")),
    ("ssh host keys", ("sshd", "ssh", "host key", "host_key")),
    ("systemd confinement", ("systemd", "user manager", "unshare", "namespace", "cgroup")),
)
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Outside CI a green run can hide security tests that never ran: say how many, and which kinds."""
    kinds: dict[str, int] = {}
    for nodeid, reason in _SKIPPED:
        text = f"{nodeid} {reason}".lower()
        kind = next((k for k, words in SECURITY_KINDS if any(w in text for w in words)), None)
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
    if kinds:
        total = sum(kinds.values())
        detail = ", ".join(f"{n} {k}" for k, n in kinds.items())
        terminalreporter.write_sep("!", f"{total} SECURITY TEST(S) DID NOT RUN ({detail})", red=True, bold=True)
        terminalreporter.write_line("This run proves nothing about them: run as root with the tools they need "
                                    "(CI sets AIWG_NO_SKIP=1, which fails every skip).")


@pytest.fixture(scope="session")
def user_manager() -> Iterator[UserManager]:
    """One private ``systemd --user`` (+ journald) for the whole session."""
    require_private_manager_support()
    with UserManager() as manager:
        yield manager


@pytest.fixture
def sd(user_manager: UserManager) -> Iterator[UserManager]:
    """Per-test view of ``user_manager`` that removes the units the test installed."""
    yield user_manager
    user_manager.cleanup_units()
