#!/usr/bin/env python3
"""What the budget check adds to a task start (no assertions; target < 0.1 ms per start).

``Ledger.admit`` with every kind of budget configured (service per day and month, project per day,
rule per day) and a few running tasks counted at their live cost, over a month of 10,000 finished
tasks loaded from a real store.  The peer is the one thing every start already does: the scheduler's
pick of the next queued task from SQLite.

Run:  PYTHONPATH=. .venv/bin/python bench/budget.py [--calls N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwg_service.budgets.ledger import Ledger
from aiwg_service.budgets.schema import BudgetSection
from aiwg_service.tasks.model import Task, TaskState, utc_now
from aiwg_service.tasks.store import Store, _sql_value


def main(calls: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="aiwg-budget-"))
    store = Store(state)
    now = utc_now()
    with store._tx() as db:  # a month of history, fast
        for i in range(10_000):
            t = Task(id=f"t-{i:012d}", project=f"/p{i % 5}", prompt="x", state=TaskState.completed,
                     created_at=now, finished_at=now, cost_usd=0.001, origin={"rule": f"r{i % 7}"})
            cols = Task.__struct_fields__
            db.execute(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       [_sql_value(c, getattr(t, c)) for c in cols])
    svc = BudgetSection(service_daily_usd=1000, service_monthly_usd=10000, project_daily_usd=500,
                        rule_daily_usd=200)
    ledger = Ledger(store.costs_since, lambda: (svc, {"/p1": BudgetSection(rules={"r1": 300})}))
    t0 = time.perf_counter()
    ledger.reload()
    load = time.perf_counter() - t0
    for i in range(3):
        ledger.on_cost(Task(id=f"t-run{i}", project="/p1", prompt="x", state=TaskState.running,
                            origin={"rule": "r1"}), 0.5)
    task = Task(id="t-next", project="/p1", prompt="x", origin={"rule": "r1"})
    assert ledger.admit(task) is None
    t0 = time.perf_counter()
    for _ in range(calls):
        ledger.admit(task)
    admit = (time.perf_counter() - t0) / calls
    store.submit("/p1", "queued one")
    t0 = time.perf_counter()
    for _ in range(min(calls, 20_000)):
        store.next_queued()
    pick = (time.perf_counter() - t0) / min(calls, 20_000)
    print(f"ledger load (10,000 finished tasks this month): {load * 1000:.1f} ms, once per day/reload")
    print(f"budget check per start: {admit * 1e6:.2f} us (target < 100 us)")
    print(f"peer, the scheduler's queue pick per start: {pick * 1e6:.2f} us; ratio {admit / pick:.2f}x")
    store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    main(ap.parse_args().calls)
