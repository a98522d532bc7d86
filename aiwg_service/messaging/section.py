"""The ``messaging`` section, registered with the config document (``aiwg_service.schemas`` imports this)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..config import register_literal, register_pattern, register_section, service_only
from .schema import BASE_URL, MessagingSection, Permission, Severity, check_section


def check(cfg: Any) -> list[tuple[str, str]]:
    return check_section(cfg.messaging)


register_literal(Severity, Permission)
register_pattern(BASE_URL, "{v} must be an http(s):// or ws(s):// URL")
register_section("messaging", MessagingSection, MessagingSection, check=check, scan_secrets=True)
# users, bridges and limits: whoever can commit to a project must not grant themselves commands
for _f in msgspec.structs.fields(MessagingSection):
    if _f.encode_name != "subscriptions":
        service_only(f"messaging.{_f.encode_name}", "users, bridges and limits come from the service-wide file "
                                                    "only (a project's file may add subscriptions)")
