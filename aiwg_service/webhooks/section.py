"""The ``webhook`` section, registered with ``config``: the listener (service-wide) and each file's hooks."""

from __future__ import annotations

from typing import Any

from ..config import add_files_check, register_literal, register_pattern, register_section, service_only
from .schema import HOOK_ID, HookKind, WebhookSection, check_files, check_section
from .secrets import credential_exists


def check_webhook(cfg: Any) -> list[tuple[str, str]]:
    """Hook ids, ``events`` where it applies, and every enabled hook's secret set (env or credential)."""
    return check_section(cfg.webhook)


register_literal(HookKind)
register_pattern(HOOK_ID, "{v} may use only letters, digits and _ . - (at most 64, starting with a letter or digit)")
def check_webhook_files(service: Any, service_file: str, projects: dict[str, Any]) -> list[str]:
    return check_files(service.webhook, service_file, {f: c.webhook for f, c in projects.items()}, credential_exists)


register_section("webhook", WebhookSection, WebhookSection, check=check_webhook)
add_files_check(check_webhook_files)
for _key in ("port", "bind", "max_body_bytes", "rate_limit"):  # the one listener is the service's
    service_only(f"webhook.{_key}")
