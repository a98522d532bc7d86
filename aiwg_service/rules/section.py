"""The ``rules`` section: automation rules in either form, kept as plain objects until the engine compiles them.

The schema code that checks them (``rules.schema``) is imported only when a document is checked, so
loading the section list stays cheap for ``aiwgctl``.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from ..config import register_section


class AutomationSection(Struct):
    """Engine-wide limits of a project's rules (the service file's apply to projects that do not set them)."""

    #: how many rule runs may follow from one outside event (a task queued by a rule triggered by a task's
    #: event is depth 2); a run past it is cut, traced and announced as automation.chain_cut
    max_chain_depth: Annotated[int, Meta(ge=1, le=20)] = 3


def check_rules(cfg: Any) -> list[tuple[str, str]]:
    """Rules and the schedule.jobs shorthand, checked by the engine's own schema code."""
    from .schema import check_config

    return check_config(cfg)


register_section("rules", list[dict[str, Any]], list, check=check_rules, scan_secrets=True)
register_section("automation", AutomationSection, AutomationSection)
