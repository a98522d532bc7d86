"""Every config section: importing this module registers them all with ``config`` (each module registers its own).

``config`` imports no subsystem; this is the one list of whose sections make up the document, used by the
service (through ``wiring``) and by ``aiwgctl config check``.
"""

from __future__ import annotations

from . import config
from .budgets import section as _budgets  # budgets
from .chat import section as _chat  # sessions
from .events import section as _events  # watch, schedule
from .executors import section as _executors  # executors
from .messaging import section as _messaging  # messaging
from .rules import section as _rules  # rules
from .tasks import section as _tasks  # agents
from .web import section as _web  # web
from .webhooks import section as _webhooks  # webhook

config.sections_complete()

__all__ = ["_budgets", "_chat", "_events", "_executors", "_messaging", "_rules", "_tasks", "_web", "_webhooks"]
