"""The ``budgets`` config section (see ``schema.py``)."""

from __future__ import annotations

from ..config import register_section
from .schema import BudgetSection, check_budgets

register_section("budgets", BudgetSection, BudgetSection, check=check_budgets)
