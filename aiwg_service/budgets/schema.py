"""The ``budgets`` config section (service-wide file and project files).

Service-wide file: ``service_daily_usd``, ``service_monthly_usd`` (the whole service),
``project_daily_usd`` and ``rule_daily_usd`` (defaults for every project / rule), ``warn_at`` and
``tz``.  A project file: ``project_daily_usd`` and ``rule_daily_usd`` for that project, and ``rules``
(``{rule_id: usd}``) for single rules.  Negative or non-numeric limits are config errors naming
the field (the schema walker reports them).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct, field

Usd = Annotated[float, Meta(ge=0)]


class BudgetSection(Struct, forbid_unknown_fields=False):
    service_daily_usd: Usd | None = None
    service_monthly_usd: Usd | None = None
    project_daily_usd: Usd | None = None
    rule_daily_usd: Usd | None = None
    rules: dict[str, Usd] = field(default_factory=dict)
    #: Share of a budget at which ``budget.warning`` goes out.
    warn_at: Annotated[float, Meta(gt=0, le=1)] = 0.8
    #: IANA zone the days and months are counted in (default: the service's zone).
    tz: str | None = None


def check_budgets(cfg: object) -> list[tuple[str, str]]:
    """Semantic check: the time zone must exist."""
    b = getattr(cfg, "budgets", None)
    if b is None or not b.tz:
        return []
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(b.tz)
    except (ZoneInfoNotFoundError, ValueError):
        return [("budgets.tz", f"{b.tz!r} is not a known time zone (an IANA name such as \"Europe/Berlin\")")]
    return []
