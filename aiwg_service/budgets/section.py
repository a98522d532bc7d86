"""The ``budgets`` config section (see ``schema.py``)."""

from __future__ import annotations

from ..config import register_section, service_only
from .schema import BudgetSection, check_budgets

register_section("budgets", BudgetSection, BudgetSection, check=check_budgets)
for _key in ("service_daily_usd", "service_monthly_usd", "warn_at", "tz"):  # the whole service's budget
    service_only(f"budgets.{_key}")
