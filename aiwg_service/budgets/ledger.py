"""Spend per budget and period, and the admission check before a task starts.

Why in memory: the check runs for every task start and must cost microseconds, not a query.  The
ledger loads the month's finished costs once (at start, at each new day, after a reload), adds each
finished task's cost as it is recorded, and counts running tasks at their live cost, so a budget is
judged on what is spent *now*.

Why reserve: a run's cost is $0 until its first usage (or its result line), so tasks started together all
passed the check and a $0.50 limit ended at $1.16.  A start now *reserves* what the task may spend (its
``max_budget_usd``, else its profile's, else the typical final cost learned from that agent's past runs),
and a running task counts at the larger of its reservation and its cost so far; its final cost settles
it.  Concurrent starts can then overshoot a limit by at most one task's reservation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from .schema import BudgetSection

__all__ = ["Budget", "Ledger"]

log = logging.getLogger(__name__)

#: ``(project, rule or None, cost_usd, finished_at ISO UTC)`` of finished tasks since an ISO time.
CostRows = Callable[[str], Iterable[tuple[str, str | None, float, str]]]
Emit = Callable[[str, str | None, dict[str, Any]], None]


@dataclass(frozen=True)
class Budget:
    """One limit a task falls under: ``kind`` service|project|rule, ``period`` day|month."""

    kind: str
    period: str
    key: str  # "*" | project root | "project#rule"
    limit: float

    @property
    def name(self) -> str:
        return f"{self.kind}.{'daily' if self.period == 'day' else 'monthly'}"


@dataclass
class _Period:
    day: str = ""
    month: str = ""
    day_start: str = ""  # ISO UTC, comparable with finished_at
    month_start: str = ""
    next_reset: float = 0.0  # epoch seconds of the next local midnight


@dataclass
class _Spend:
    service_day: float = 0.0
    service_month: float = 0.0
    project_day: dict[str, float] = field(default_factory=dict)
    rule_day: dict[str, float] = field(default_factory=dict)


def _iso(dt: datetime) -> str:
    """An aware time as the store's UTC timestamp format (sorts with ``finished_at``)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _rule_of(task: Any) -> str | None:
    o = task.origin or {}
    r = o.get("rule") or o.get("rule_id")
    return str(r) if r else None


class Ledger:
    """``admit(task)``: None, or why it must wait.  ``on_cost(task, cost)``: live and final costs."""

    def __init__(self, rows: CostRows, sections: Callable[[], tuple[BudgetSection, dict[str, BudgetSection]]],
                 emit: Emit | None = None, clock: Callable[[], float] = time.time) -> None:
        self.rows = rows
        self.sections = sections
        self.emit = emit
        self.clock = clock
        self.period = _Period()
        self.spend = _Spend()
        self.live: dict[str, tuple[str, str | None, float]] = {}
        #: task id -> what its start reserved (counted in ``live`` until its cost passes it or it ends).
        self.reserved: dict[str, float] = {}
        #: agent profile name -> typical final cost (a moving average of its runs), for tasks with no budget.
        self.typical: dict[str, float] = {}
        self._announced: set[tuple[str, str, str, str]] = set()  # (event, budget name, key, period)

    # -- periods ------------------------------------------------------------------------------------
    def _tz(self) -> tzinfo | None:
        svc, _ = self.sections()
        if svc.tz:
            from zoneinfo import ZoneInfo

            return ZoneInfo(svc.tz)
        return None  # the service's local zone

    def reload(self) -> None:
        """Recompute the current periods and their spend from the store (start, new day, reload)."""
        tz = self._tz()
        now = datetime.fromtimestamp(self.clock(), tz) if tz else datetime.fromtimestamp(self.clock()).astimezone()
        day0 = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month0 = day0.replace(day=1)
        nxt = (day0 + timedelta(days=1, hours=3)).replace(hour=0)  # DST-safe next midnight
        p = _Period(day=day0.strftime("%Y-%m-%d"), month=day0.strftime("%Y-%m"), day_start=_iso(day0),
                    month_start=_iso(month0), next_reset=nxt.timestamp())
        sp = _Spend()
        for project, rule, cost, finished in self.rows(p.month_start):
            sp.service_month += cost
            if finished >= p.day_start:
                sp.service_day += cost
                sp.project_day[project] = sp.project_day.get(project, 0.0) + cost
                if rule:
                    rk = f"{project}#{rule}"
                    sp.rule_day[rk] = sp.rule_day.get(rk, 0.0) + cost
        if p.day != self.period.day:
            self._announced.clear()
        self.period, self.spend = p, sp

    def _roll(self) -> bool:
        if self.clock() >= self.period.next_reset:
            self.reload()
            return True
        return False

    # -- budgets of a task ------------------------------------------------------------------------------
    def budgets_for(self, project: str, rule: str | None) -> list[Budget]:
        svc, projects = self.sections()
        prj = projects.get(project)
        out: list[Budget] = []
        if svc.service_daily_usd is not None:
            out.append(Budget("service", "day", "*", svc.service_daily_usd))
        if svc.service_monthly_usd is not None:
            out.append(Budget("service", "month", "*", svc.service_monthly_usd))
        lim = prj.project_daily_usd if prj is not None and prj.project_daily_usd is not None else svc.project_daily_usd
        if lim is not None:
            out.append(Budget("project", "day", project, lim))
        if rule:
            lim = None
            if prj is not None:
                lim = prj.rules.get(rule, prj.rule_daily_usd)
            if lim is None:
                lim = svc.rule_daily_usd
            if lim is not None:
                out.append(Budget("rule", "day", f"{project}#{rule}", lim))
        return out

    def spent(self, b: Budget) -> float:
        sp = self.spend
        if b.kind == "service":
            base = sp.service_day if b.period == "day" else sp.service_month
            return base + sum(c for _p, _r, c in self.live.values())
        if b.kind == "project":
            return sp.project_day.get(b.key, 0.0) + sum(c for p, _r, c in self.live.values() if p == b.key)
        return sp.rule_day.get(b.key, 0.0) + sum(c for p, r, c in self.live.values() if r and f"{p}#{r}" == b.key)

    def period_of(self, b: Budget) -> str:
        return self.period.day if b.period == "day" else self.period.month

    # -- the hooks the supervisor calls -------------------------------------------------------------------
    def reservation(self, task: Any, profile: Any = None) -> float:
        """What a start of ``task`` reserves: its budget, its profile's, or its agent's typical cost."""
        for v in (getattr(task, "max_budget_usd", None), getattr(profile, "max_budget_usd", None)):
            if isinstance(v, int | float) and v > 0:
                return float(v)
        return self.typical.get(getattr(task, "agent", ""), 0.0)

    def admit(self, task: Any, profile: Any = None, *, reserve: bool = True) -> str | None:
        """None if ``task`` may start (and, with ``reserve``, its reservation is taken: the supervisor
        starts it now and reports its end through :meth:`on_cost`); else the reason it waits (``held``)."""
        self._roll()
        rule = _rule_of(task)
        budgets = self.budgets_for(task.project, rule)
        for b in budgets:
            s = self.spent(b)
            if s >= b.limit:
                reason = (f"{b.name} budget{'' if b.kind == 'service' else ' for ' + b.key} is spent: "
                          f"${s:.4f} of ${b.limit:g} ({self.period_of(b)})")
                if s - sum(c for t, (_p, _r, c) in self.live.items() if t in self.reserved) < b.limit:
                    reason += " counting what running tasks have reserved"
                self._announce("budget.exceeded", b, s, task.project, task=task.id, action="held")
                return reason
        if reserve and budgets:
            r = self.reservation(task, profile)
            if r > 0:
                self.reserved[task.id] = r
                self.live[task.id] = (task.project, rule, r)
        return None

    def blocking(self, task: Any) -> Budget | None:
        rule = _rule_of(task)
        for b in self.budgets_for(task.project, rule):
            if self.spent(b) >= b.limit:
                return b
        return None

    def on_cost(self, task: Any, cost: float | None) -> None:
        """A running task's cost so far (None: it ended); a finished task's final cost is charged."""
        rolled = self._roll()
        rule = _rule_of(task)
        state = getattr(task.state, "value", task.state)
        if state != "running":
            self.live.pop(task.id, None)
            self.reserved.pop(task.id, None)
            final = task.cost_usd
            if final is not None and final >= 0 and getattr(task, "agent", None):
                old = self.typical.get(task.agent)
                self.typical[task.agent] = final if old is None else 0.7 * old + 0.3 * final
            if final is not None and not rolled and task.finished_at and task.finished_at >= self.period.month_start:
                sp = self.spend
                sp.service_month += final
                if task.finished_at >= self.period.day_start:
                    sp.service_day += final
                    sp.project_day[task.project] = sp.project_day.get(task.project, 0.0) + final
                    if rule:
                        rk = f"{task.project}#{rule}"
                        sp.rule_day[rk] = sp.rule_day.get(rk, 0.0) + final
            self._check(task.project, rule)
            return
        if cost is None:
            self.live.pop(task.id, None)
            self.reserved.pop(task.id, None)
            return
        self.live[task.id] = (task.project, rule, max(cost, self.reserved.get(task.id, 0.0)))
        self._check(task.project, rule)

    def _check(self, project: str, rule: str | None) -> None:
        svc, _ = self.sections()
        for b in self.budgets_for(project, rule):
            s = self.spent(b)
            if s >= b.limit:
                self._announce("budget.exceeded", b, s, project)
            elif s >= svc.warn_at * b.limit:
                self._announce("budget.warning", b, s, project)

    def _announce(self, event: str, b: Budget, spent: float, project: str | None, **extra: Any) -> None:
        """Publish ``budget.warning``/``budget.exceeded`` once per budget and period."""
        key = (event, b.name, b.key, self.period_of(b))
        if key in self._announced:
            return
        self._announced.add(key)
        data = {"budget": b.name, "key": b.key, "period": self.period_of(b), "spent_usd": round(spent, 6),
                "limit_usd": b.limit, **extra}
        (log.warning if event == "budget.exceeded" else log.info)(
            "%s: %s %s $%.4f of $%g", event, b.name, b.key, spent, b.limit)
        if self.emit is not None:
            try:
                self.emit(event, None if b.kind == "service" else project, data)
            except Exception:
                log.exception("publishing %s failed", event)

    # -- status ---------------------------------------------------------------------------------------------
    def status(self, projects: Iterable[str], held: Iterable[Any]) -> list[dict[str, Any]]:
        """Every configured budget: spent, limit, period, and the held tasks it blocks."""
        self._roll()
        seen: dict[tuple[str, str, str], dict[str, Any]] = {}

        def add(b: Budget) -> dict[str, Any]:
            k = (b.kind, b.period, b.key)
            if k not in seen:
                s = self.spent(b)
                seen[k] = {"budget": b.name, "key": b.key, "period": self.period_of(b), "spent_usd": round(s, 6),
                           "limit_usd": b.limit, "remaining_usd": round(max(b.limit - s, 0.0), 6), "held": []}
            return seen[k]

        _svc, sections = self.sections()
        for p in projects:
            for b in self.budgets_for(p, None):
                add(b)
            sec = sections.get(p)
            for r in (sec.rules if sec is not None else {}):
                for b in self.budgets_for(p, r):
                    add(b)
        for rk in self.spend.rule_day:
            p, _, r = rk.partition("#")
            for b in self.budgets_for(p, r):
                add(b)
        for t in held:
            b = self.blocking(t)
            if b is not None:
                add(b)["held"].append(t.id)
        return list(seen.values())
