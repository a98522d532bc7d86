"""The ``sessions`` section: how interactive agent sessions get their worktrees ready."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from ..config import register_section


class SessionsSection(Struct, kw_only=True):
    #: An argv run in a fresh worktree before the agent starts (no shell unless it names one), e.g.
    #: ``["sh", "-c", "cp ../../.env . && npm ci"]``.  ``{project}`` is replaced by the project root.
    worktree_setup: list[str] | None = None
    setup_timeout_seconds: Annotated[float, Meta(gt=0, le=3600)] = 600


register_section("sessions", SessionsSection, SessionsSection)
