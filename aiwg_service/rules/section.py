"""The ``rules`` section: automation rules in either form, kept as plain objects until the engine compiles them.

The schema code that checks them (``rules.schema``) is imported only when a document is checked, so
loading the section list stays cheap for ``aiwgctl``.
"""

from __future__ import annotations

from typing import Any

from ..config import register_section


def check_rules(cfg: Any) -> list[tuple[str, str]]:
    """Rules and the schedule.jobs shorthand, checked by the engine's own schema code."""
    from .schema import check_config

    return check_config(cfg)


register_section("rules", list[dict[str, Any]], list, check=check_rules, scan_secrets=True)
