"""Every config section, in document order: importing this module registers them all with ``config``.

``config`` imports no subsystem; this is the one list of whose sections make up the document, used by the
service (through ``wiring``) and by ``aiwgctl config check``.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from . import config
from .config import EnvName
from .events import section as _events  # watch, schedule
from .rules import section as _rules  # rules
from .tasks import section as _tasks  # agents


class WebhookSection(Struct):
    """Declared here until the webhooks subsystem owns it."""

    enabled: bool = False
    port: Annotated[int, Meta(ge=1, le=65535)] = 9471
    secret_env: EnvName = "AIWG_WEBHOOK_SECRET"


config.register_section("webhook", WebhookSection, WebhookSection)
config.register_section("messaging", dict[str, Any], dict, scan_secrets=True)
config.sections_complete()

__all__ = ["_events", "_rules", "_tasks"]
