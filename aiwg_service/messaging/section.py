"""The ``messaging`` section, registered with the config document (``aiwg_service.schemas`` imports this)."""

from __future__ import annotations

from typing import Any

from ..config import register_literal, register_pattern, register_section
from .schema import BASE_URL, MessagingSection, Permission, Severity, check_section


def check(cfg: Any) -> list[tuple[str, str]]:
    return check_section(cfg.messaging)


register_literal(Severity, Permission)
register_pattern(BASE_URL, "{v} must be an http(s):// or ws(s):// URL")
register_section("messaging", MessagingSection, MessagingSection, check=check, scan_secrets=True)
