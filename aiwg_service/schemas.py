"""Every config section, in document order: importing this module registers them all with ``config``.

``config`` imports no subsystem; this is the one list of whose sections make up the document, used by the
service (through ``wiring``) and by ``aiwgctl config check``.
"""

from __future__ import annotations

from typing import Any

from . import config
from .budgets import section as _budgets  # budgets
from .events import section as _events  # watch, schedule
from .executors import section as _executors  # executors
from .rules import section as _rules  # rules
from .tasks import section as _tasks  # agents
from .webhooks import section as _webhooks  # webhook

config.register_section("messaging", dict[str, Any], dict, scan_secrets=True)
config.sections_complete()

__all__ = ["_budgets", "_events", "_executors", "_rules", "_tasks", "_webhooks"]
