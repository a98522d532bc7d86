"""Shared fixtures.

``user_manager`` (session-scoped) boots a private systemd user manager; see
:mod:`tests.systemd_env` for how and :class:`tests.systemd_env.UserManager`
for the API.  Tests using it are marked ``systemd`` automatically; they skip
when the machine cannot host one, and fail instead under
``AIWG_REQUIRE_SYSTEMD=1`` (CI).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from systemd_env import UserManager, require_private_manager_support


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"user_manager", "sd"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.systemd)


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
