"""The budgets subsystem: owns the ledger, re-arms it at each local midnight, serves ``budget.status``.

Built from narrow ports (``wiring.py`` connects it): the task store's two reads, the current configs,
the bus, and the supervisor's ``release_held``.  The supervisor calls ``ledger.admit`` before each
start and ``ledger.on_cost`` as costs come in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .. import protocol as p
from .ledger import CostRows, Emit, Ledger
from .schema import BudgetSection

log = logging.getLogger(__name__)


class BudgetsSubsystem:
    name = "budgets"

    def __init__(self, *, cost_rows: Callable[[], CostRows], held: Callable[[], Iterable[Any]],
                 sections: Callable[[], tuple[BudgetSection, dict[str, BudgetSection]]],
                 projects: Callable[[], list[str]], resolve_root: Callable[[str], str],
                 emit: Emit, release: Callable[[], Any]) -> None:
        self.ledger = Ledger(lambda since: cost_rows()(since), sections, emit)
        self._held = held
        self._projects = projects
        self._resolve_root = resolve_root
        self._release = release
        self._timer: Any = None

    async def start(self) -> None:
        from ..events.walltimer import WallTimer

        self.ledger.reload()
        self._timer = WallTimer(self._new_day)
        self._timer.start()
        self._timer.arm(self.ledger.period.next_reset)

    def _new_day(self) -> None:
        """Midnight in the budgets' zone (or the clock was set): new periods; held tasks may go."""
        old = self.ledger.period.day
        self.ledger.reload()
        if self._timer is not None:
            self._timer.arm(self.ledger.period.next_reset)
        if self.ledger.period.day != old:
            log.info("budgets: new day %s", self.ledger.period.day)
            try:
                self._release()
            except Exception:
                log.exception("releasing held tasks failed")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def apply(self, _configs: Any) -> None:
        """A reload may change limits or the zone (the supervisor then releases what it can)."""
        self.ledger.reload()
        if self._timer is not None:
            self._timer.arm(self.ledger.period.next_reset)

    def health(self) -> dict[str, Any]:
        sp = self.ledger.spend
        return {"day": self.ledger.period.day, "spent_today_usd": round(sp.service_day, 6),
                "spent_month_usd": round(sp.service_month, 6), "running": len(self.ledger.live)}

    def register_rpc(self, rpc: Any) -> None:
        def status(params: p.BudgetStatusParams, _conn: Any) -> dict[str, Any]:
            projects = self._projects()
            if params.project is not None:
                root = self._resolve_root(params.project)
                projects = [x for x in projects if x == root]
            held = [t for t in self._held() if params.project is None or t.project in projects]
            return {"budgets": self.ledger.status(projects, held), "day": self.ledger.period.day,
                    "month": self.ledger.period.month,
                    "held": [{"taskId": t.id, "project": t.project, "reason": t.held_reason} for t in held]}

        rpc.register("budget.status", status)
